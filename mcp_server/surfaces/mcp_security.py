"""MCP transport security for streamable HTTP: which ``Host`` and ``Origin`` headers ``/mcp``
accepts (DNS-rebinding protection, checked by the SDK), and a request shape the SDK's check
can rely on: one ``Host`` and at most one ``Origin``, compared without case (host names and
URL schemes are case-insensitive, RFC 3986 section 3.1 and 3.2.2)."""

from __future__ import annotations

import json

from mcp.server.transport_security import TransportSecuritySettings
from starlette.types import ASGIApp, Receive, Scope, Send

from mcp_server.settings import Settings

__all__ = ["LOOPBACK_NAMES", "OneHostOneOrigin", "transport_security"]


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
