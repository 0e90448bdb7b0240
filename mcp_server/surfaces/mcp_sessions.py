"""A cap on the MCP sessions one caller may hold open over streamable HTTP.

The MCP SDK's session manager limits sessions for the whole server (``max_sessions``), so
one caller opening sessions in a loop could lock every other MCP client out until the
sessions expire. :class:`SessionQuota` sits in front of it and refuses a caller's new
session (HTTP 429, a JSON-RPC error body as the SDK's own, ``Retry-After``) while that
caller already holds ``limit`` sessions (``--mcp-max-sessions-per-client``, 16 by default). A caller is its API key of
the store, or its client address when it has none (no keys, or the single ``--api-key``).

A session counts from its successful opening request (a response that carries
``Mcp-Session-Id``) until the client ends it (``DELETE``) or it has seen no request for
:data:`SESSION_IDLE_TIMEOUT` seconds, the idle timeout the session manager is given too.

A session answers only the caller that opened it: a request carrying another caller's
session id gets 404 (JSON-RPC error ``-32600``, "Session not found", as the SDK answers an
unknown id), so a session id that leaks does not hand over the session.
"""

from __future__ import annotations

import json
import math
import time
import uuid
from collections.abc import Callable

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mcp_server.gateway import request_tenant

__all__ = ["SESSION_IDLE_TIMEOUT", "SessionQuota"]

SESSION_IDLE_TIMEOUT = 300.0
"""Seconds without a request after which a session is closed (the SDK's default is 1800)."""

_SESSION_HEADER = b"mcp-session-id"


class SessionQuota:
    """ASGI wrapper around the MCP streamable-HTTP app that caps sessions per caller.

    Args:
        app: the MCP ASGI app.
        limit: open sessions one key (or one client address without a key) may hold.
        idle_timeout: seconds after its last request that a session stops counting.
        clock: monotonic seconds (for tests).
    """

    def __init__(
        self,
        app: ASGIApp,
        limit: int,
        idle_timeout: float = SESSION_IDLE_TIMEOUT,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.app = app
        self.limit = limit
        self.idle_timeout = idle_timeout
        self._clock = clock
        self._sessions: dict[str, dict[str, float]] = {}  # caller -> session id -> last request
        self._owners: dict[str, str] = {}  # session id -> caller

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        now = self._clock()
        caller = request_tenant(Request(scope))
        sessions = self._live(caller, now)
        session_id = dict(scope["headers"]).get(_SESSION_HEADER)
        if session_id is not None:
            session = session_id.decode("latin-1")
            owner = self._owners.get(session)
            if owner is not None and owner != caller:
                await _not_found(send)
                return
            if session in sessions:
                sessions[session] = now
                if scope["method"] == "DELETE":
                    del sessions[session]
                    self._owners.pop(session, None)
            await self.app(scope, receive, send)
            return
        if len(sessions) >= self.limit:
            retry_after = max(1, math.ceil(min(sessions.values()) + self.idle_timeout - now))
            await _too_many(self.limit, retry_after, send)
            return
        pending = f"pending-{uuid.uuid4().hex}"
        sessions[pending] = now  # holds the slot while the opening request runs

        async def watch(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] < 400:
                for name, value in message.get("headers", ()):
                    if name.lower() == _SESSION_HEADER:
                        sessions[value.decode("latin-1")] = self._clock()
                        self._owners[value.decode("latin-1")] = caller
            await send(message)

        try:
            await self.app(scope, receive, watch)
        finally:
            sessions.pop(pending, None)

    def _live(self, caller: str, now: float) -> dict[str, float]:
        """The caller's sessions, those idle past the timeout dropped."""
        sessions = self._sessions.setdefault(caller, {})
        for session in [s for s, seen in sessions.items() if now - seen > self.idle_timeout]:
            del sessions[session]
            self._owners.pop(session, None)
        return sessions


async def _too_many(limit: int, retry_after: int, send: Send) -> None:
    body = json.dumps({
        "jsonrpc": "2.0", "id": None,
        "error": {"code": -32000, "message": f"Too many open MCP sessions for this caller (at most {limit}); "
                                             "end one with DELETE /mcp or wait for one to expire."},
    }).encode()
    headers = [(b"content-type", b"application/json"), (b"retry-after", str(retry_after).encode()),
               (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 429, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _not_found(send: Send) -> None:
    body = json.dumps({"jsonrpc": "2.0", "id": None, "error": {"code": -32600, "message": "Session not found"}}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 404, "headers": headers})
    await send({"type": "http.response.body", "body": body})
