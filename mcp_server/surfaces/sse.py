"""Server-sent events framing for chat-completion chunk streams.

OpenAI's streaming format: each chunk is one ``data: <json>`` event; an error that
happens after the stream has started is sent as ``data: {"error": {...}}``; the stream
always ends with ``data: [DONE]``. Events are framed here, as bytes, with orjson's compact
JSON: a streamed chunk is the gateway's most repeated work (``bench_gateway_stream.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import anyio
import orjson

from mcp_server.errors import ServiceError

__all__ = ["DONE", "coalesce", "sse_events"]

logger = logging.getLogger(__name__)

DONE = "[DONE]"


def _event(payload: Any) -> bytes:
    """One SSE event whose ``data`` is ``payload`` as JSON (one line: JSON text has no raw newline)."""
    return b"data: " + orjson.dumps(payload) + b"\r\n\r\n"


async def sse_events(chunks: AsyncIterator[dict[str, Any]]) -> AsyncIterator[bytes]:
    """Encode chunks as whole SSE events, ending with ``data: [DONE]``.

    Args:
        chunks: chunk dicts; the iterator is closed when this generator is closed
            (a client disconnect), which cancels the generation behind it.

    Yields:
        Each event's bytes (``data: <json>`` and the blank line), ready to send.
    """
    try:
        async for chunk in chunks:
            yield _event(chunk)
    except ServiceError as exc:
        yield _event(exc.to_dict())
    except Exception:  # the stream has started: report in-band, keep the server up
        logger.exception("stream failed")
        yield _event(ServiceError("The server failed while generating.").to_dict())
    finally:
        await chunks.aclose()
    yield f"data: {DONE}\r\n\r\n".encode()


_FINISHED = object()


async def coalesce(events: AsyncIterator[bytes], limit: int = 256) -> AsyncIterator[bytes]:
    """Join the events that are ready together into one write, as SGLang's ``--stream-interval``
    groups tokens: a task reads ``events`` ahead (at most ``limit`` unsent), and each write
    takes all that are ready. No event waits for another; each costs one send (its timeout
    scope, the middleware, the HTTP framing) less when several are ready at once.

    Args:
        events: whole SSE events. One task of its own reads them, and closes them when this
            generator ends, is closed or is cancelled (a client that went away).
        limit: most events read ahead of the client (beyond it, reading waits: back-pressure).

    Yields:
        One or more events' bytes, in order.

    Raises:
        Exception: what reading ``events`` raised, after the events read before it.
    """
    ready: asyncio.Queue[Any] = asyncio.Queue()
    room = asyncio.Semaphore(limit)

    async def read_ahead() -> None:
        try:
            async for event in events:
                await room.acquire()
                ready.put_nowait(event)
        finally:
            await events.aclose()

    reader = asyncio.create_task(read_ahead())
    reader.add_done_callback(lambda _: ready.put_nowait(_FINISHED))
    try:
        while True:
            batch = [await ready.get()]
            while not ready.empty():
                batch.append(ready.get_nowait())
            data = [event for event in batch if event is not _FINISHED]
            for _ in data:
                room.release()
            if data:
                yield b"".join(data)
            if batch[-1] is _FINISHED:
                if not reader.cancelled() and reader.exception() is not None:
                    raise reader.exception()
                return
    finally:
        if not reader.done():
            reader.cancel()
            with anyio.CancelScope(shield=True), contextlib.suppress(asyncio.CancelledError):
                await reader
