"""The gateway's HTTP side: one ASGI middleware in front of REST and MCP.

For every HTTP request it:

- refuses a body larger than ``max_body_bytes`` with 413 (by ``Content-Length``, or by
  counting while it reads a body sent without one), before any route sees it, and a body
  that pauses longer than ``read_timeout`` between two parts with 408 (the server then
  closes the connection, whose body was not read to its end);
- on the API paths (:meth:`Gateway.needs_key`: ``/v1/...`` and ``/mcp``), resolves
  ``Authorization: Bearer`` to the caller's key (:meth:`Gateway.authenticate`, 401 on
  failure or when the header is sent more than once) and leaves it in the ASGI scope, where
  :func:`request_key` finds it for REST routes and MCP tool calls alike (and
  :func:`request_is_keyless` whether the request came in without any credential);
- counts the response in ``chatcap_http_requests_total``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anyio
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mcp_server.errors import AuthenticationError, PayloadTooLarge, RequestTimeout, ServiceError
from mcp_server.gateway.gateway import Gateway
from mcp_server.gateway.records import KeyRecord

__all__ = ["GatewayMiddleware", "request_is_keyless", "request_key", "request_tenant"]

_STATE_KEY = "chatcap_key"
_STATE_KEYLESS = "chatcap_keyless"
_WITH_BODY = frozenset({"POST", "PUT", "PATCH"})


def request_key(request: Any) -> KeyRecord | None:
    """The key :class:`GatewayMiddleware` resolved for a Starlette request (None: no key).

    Args:
        request: a ``starlette.requests.Request``, or None (MCP over stdio).
    """
    if request is None:
        return None
    return request.scope.get("state", {}).get(_STATE_KEY)


def request_tenant(request: Any) -> str | None:
    """Who sent a Starlette request, for the engine's fairness and prefix-cache isolation:
    the id of its API key of the store (``key_...``), else ``address:<client address>``
    (no keys, or the single ``--api-key``); None for no request (MCP over stdio)."""
    if request is None:
        return None
    key = request_key(request)
    if key is not None:
        return key.id
    client = request.scope.get("client")
    return f"address:{client[0] if client else 'unknown'}"


def request_is_keyless(scope: Scope) -> bool:
    """Whether :class:`GatewayMiddleware` let this API request in without any credential
    (no key store key and no ``--api-key``: the server is open)."""
    return scope.get("state", {}).get(_STATE_KEYLESS, False)


class GatewayMiddleware:
    """Body limit, authentication and HTTP metrics for an ASGI app.

    Args:
        app: the app to protect.
        gateway: supplies the limits, authentication and metrics.
        error_response: renders a :class:`ServiceError` as an ASGI response (the REST
            surface's envelope).
    """

    def __init__(self, app: ASGIApp, gateway: Gateway, error_response: Callable[[ServiceError], ASGIApp]):
        self.app = app
        self.gateway = gateway
        self.error_response = error_response

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]

        async def counted_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                self.gateway.metrics.count_http(path, message["status"])
            await send(message)

        try:
            receive = await self._limit_body(scope, receive)
            if self.gateway.needs_key(path):
                authorizations = [v for k, v in scope["headers"] if k == b"authorization"]
                if len(authorizations) > 1:
                    raise AuthenticationError(
                        "Send one 'Authorization' header, not several.", bearer_error="invalid_request"
                    )
                authorization = authorizations[0].decode("latin-1") if authorizations else ""
                key = await self.gateway.authenticate(authorization)
                state = scope.setdefault("state", {})
                state[_STATE_KEY] = key
                # authenticate() lets a request in without a key only with --api-key (it matched) or when open
                state[_STATE_KEYLESS] = key is None and self.gateway.api_key is None
        except ServiceError as exc:
            await self.error_response(exc)(scope, receive, counted_send)
            return
        await self.app(scope, receive, counted_send)

    async def _limit_body(self, scope: Scope, receive: Receive) -> Receive:
        """Read the whole body (at most the limit) and return a ``receive`` that replays it.

        Raises:
            PayloadTooLarge: the body is over the limit; the message gives both sizes.
            RequestTimeout: the client paused longer than ``read_timeout`` within its body.
        """
        limit = self.gateway.limits.max_body_bytes
        timeout = self.gateway.limits.read_timeout
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise PayloadTooLarge(f"The request body is {int(declared)} bytes; at most {limit} are accepted.")
        if scope["method"] not in _WITH_BODY:
            return receive
        parts: list[bytes] = []
        size = 0
        while True:
            message: Message | None = None
            with anyio.move_on_after(timeout):
                message = await receive()
            if message is None:
                raise RequestTimeout(f"The client sent no part of the request body for {timeout:g} s.")
            if message["type"] != "http.request":
                buffered = [message]
                break
            parts.append(message.get("body", b""))
            size += len(parts[-1])
            if size > limit:
                raise PayloadTooLarge(f"The request body is over {limit} bytes, the most accepted.")
            if not message.get("more_body", False):
                buffered = [{"type": "http.request", "body": b"".join(parts), "more_body": False}]
                break

        async def replay() -> Message:
            return buffered.pop(0) if buffered else await receive()

        return replay
