"""Transport security: which ``Host`` and ``Origin`` headers ``/mcp`` accepts (DNS-rebinding
protection, checked by the SDK), and a request shape the SDK's check can rely on: one ``Host``
and at most one ``Origin``, compared without case (host names and URL schemes are
case-insensitive, RFC 3986 section 3.1 and 3.2.2). :class:`KeylessHostOriginCheck` applies the
same rules to ``/v1`` requests let in without a key; :func:`cors_middleware` lets the allowed
origins' pages call the API with a key."""

from __future__ import annotations

import json
import re
from collections.abc import Callable

from mcp.server.transport_security import TransportSecuritySettings
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

from mcp_server.errors import ServiceError
from mcp_server.gateway import request_is_keyless
from mcp_server.settings import Settings

__all__ = ["LOOPBACK_NAMES", "KeylessHostOriginCheck", "OneHostOneOrigin", "cors_middleware", "transport_security"]


LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]")
"""Host names of the loopback interface, as they appear in a ``Host`` header."""


def transport_security(settings: Settings) -> TransportSecuritySettings:
    """DNS-rebinding protection for ``/mcp``: which ``Host`` and ``Origin`` headers it accepts.

    The MCP specification (Transports, streamable HTTP, security warning) says servers MUST
    validate ``Origin``; the SDK's middleware also checks ``Host`` (421) and ``Origin``
    (403) before any session is made. Accepted hosts: the listening ``host:port`` (all
    loopback names when it is a loopback address or every interface), plus
    ``settings.allowed_hosts``. Accepted origins: ``http://`` and ``https://`` of each
    accepted host, plus ``settings.allowed_origins``. A request without ``Origin`` (any
    non-browser client) passes.

    Args:
        settings: ``host``, ``port``, ``allowed_hosts``, ``allowed_origins`` are read.
    """
    listen = f"[{settings.host}]" if ":" in settings.host else settings.host
    names = [listen]
    if settings.host in ("127.0.0.1", "localhost", "::1", "0.0.0.0", "::"):
        names += LOOPBACK_NAMES
    hosts = list(dict.fromkeys([f"{name}:{settings.port}" for name in names] + list(settings.allowed_hosts)))
    origins = [f"{scheme}://{host}" for host in hosts for scheme in ("http", "https")]
    return TransportSecuritySettings(
        allowed_hosts=hosts, allowed_origins=list(dict.fromkeys(origins + list(settings.allowed_origins)))
    )


class OneHostOneOrigin:
    """ASGI wrapper: refuse (400) a request with several ``Host`` or ``Origin`` headers, and
    lower-case the one there is before the SDK compares it with the allowed names.

    The SDK reads the first header of a name only, so ``Origin: <allowed>`` followed by
    ``Origin: http://evil.example`` would pass its check.

    Args:
        app: the MCP ASGI app.
    """

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = []
        seen: set[bytes] = set()
        for name, value in scope["headers"]:
            if name in (b"host", b"origin"):
                if name in seen:
                    await _refuse(send, f"Send one '{name.decode().title()}' header, not several.")
                    return
                seen.add(name)
                value = value.lower()
            headers.append((name, value))
        await self.app({**scope, "headers": headers}, receive, send)


async def _refuse(send: Send, message: str) -> None:
    body = json.dumps({"jsonrpc": "2.0", "id": None, "error": {"code": -32600, "message": message}}).encode()
    await send({"type": "http.response.start", "status": 400,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def _allowed(value: str, allowed: list[str]) -> bool:
    """The SDK's rule: an exact match, or ``name:*`` for ``name`` with any port."""
    return value in allowed or any(a.endswith(":*") and value.startswith(a[:-1]) for a in allowed)


class KeylessHostOriginCheck:
    """ASGI wrapper: the ``/mcp`` ``Host``/``Origin`` rules for API requests let in without a key.

    Without keys, any web page could otherwise call ``/v1`` through the user's browser (a
    cross-site ``text/plain`` POST needs no preflight) or by DNS rebinding (a page of
    ``evil.example`` resolved to 127.0.0.1). A request the gateway let in without a key
    (:func:`~mcp_server.gateway.request_is_keyless`) under ``prefixes`` must carry an accepted
    ``Host`` (else 421) and, if it has one, a single accepted ``Origin`` (else 403); answers
    are OpenAI error envelopes. Requests with a key are not checked: a key is the credential.

    Args:
        app: the app behind the gateway middleware.
        security: the accepted hosts and origins (:func:`transport_security`).
        prefixes: path prefixes checked (``/v1``).
        error_response: renders a :class:`ServiceError` as an ASGI response.
    """

    def __init__(self, app: ASGIApp, security: TransportSecuritySettings, prefixes: tuple[str, ...],
                 error_response: Callable[[ServiceError], ASGIApp]):
        self.app = app
        self.hosts = [h.lower() for h in security.allowed_hosts]
        self.origins = [o.lower() for o in security.allowed_origins]
        self.prefixes = prefixes
        self.error_response = error_response

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] == "http" and request_is_keyless(scope) and any(
            path == p or path.startswith(p + "/") for p in self.prefixes
        ):
            error = self._refusal(scope)
            if error is not None:
                await self.error_response(error)(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def _refusal(self, scope: Scope) -> ServiceError | None:
        hosts = [v.decode("latin-1").lower() for k, v in scope["headers"] if k == b"host"]
        origins = [v.decode("latin-1").lower() for k, v in scope["headers"] if k == b"origin"]
        if len(hosts) != 1 or not _allowed(hosts[0], self.hosts):
            return _status(421, "Host", "misdirected_request", "; add it with --allowed-hosts or send an API key")
        if len(origins) > 1 or (origins and not _allowed(origins[0], self.origins)):
            return _status(403, "Origin", "origin_not_allowed", "; add it with --allowed-origins or send an API key")
        return None


def _status(status: int, header: str, code: str, hint: str) -> ServiceError:
    error = ServiceError(f"The server does not accept this '{header}' header without an API key{hint}.",
                         param=header, code=code)
    error.status_code = status
    error.error_type = "invalid_request_error"
    return error


def cors_middleware(settings: Settings) -> list[Middleware]:
    """CORS (Starlette's ``CORSMiddleware``) for the pages of ``settings.allowed_origins``, empty
    when none are set.

    Such a page may send ``Authorization`` and read the answers, ``Mcp-Session-Id`` included;
    every other origin gets no CORS headers (so the browser keeps its answers from the page).
    ``name:*`` allows any port, as for ``/mcp``.
    """
    if not settings.allowed_origins:
        return []
    pattern = "|".join(
        re.escape(o[:-2]) + r":\d+" if o.endswith(":*") else re.escape(o) for o in settings.allowed_origins
    )
    return [Middleware(
        CORSMiddleware, allow_origin_regex=f"(?i:{pattern})", allow_methods=["GET", "POST", "DELETE"],
        allow_headers=["authorization", "content-type", "mcp-session-id", "mcp-protocol-version", "last-event-id"],
        expose_headers=["mcp-session-id"], max_age=600,
    )]
