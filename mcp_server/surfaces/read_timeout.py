"""A deadline for reading each request's headers, in the HTTP server itself.

uvicorn waits for the first request's headers, and for the next request's after a keep-alive
response once any byte of it arrived, without a limit: a client sending half a request holds
a connection (and a file descriptor) forever. :func:`read_timeouts` gives the uvicorn
settings whose protocol closes a connection whose request headers are not complete
``seconds`` after the connection opened or after the previous response ended. The body's
pauses are bounded one level up, by :class:`~mcp_server.gateway.GatewayMiddleware` (408).
"""

from __future__ import annotations

import asyncio
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

__all__ = ["read_timeouts"]


def read_timeouts(seconds: float) -> dict[str, Any]:
    """Keyword arguments for ``uvicorn.Config``: the h11 protocol with a header deadline.

    Args:
        seconds: how long a client may take to send a request's headers.
    """

    class HeaderDeadlineProtocol(H11Protocol):
        """uvicorn's h11 protocol; closes a connection whose request headers are late."""

        _deadline: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
            super().connection_lost(exc)

        def _arm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
            self._deadline = self.loop.call_later(seconds, self._headers_late)

        def _headers_late(self) -> None:
            self._deadline = None
            if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
                self.logger.info("closing a connection whose request headers took over %g s", seconds)
                self.transport.close()

    return {"http": HeaderDeadlineProtocol}
