"""Server-sent events framing for chat-completion chunk streams.

OpenAI's streaming format: each chunk is one ``data: <json>`` event; an error that
happens after the stream has started is sent as ``data: {"error": {...}}``; the stream
always ends with ``data: [DONE]``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import Any

from mcp_server.errors import ServiceError

__all__ = ["DONE", "sse_events"]

logger = logging.getLogger(__name__)

DONE = "[DONE]"


async def sse_events(chunks: AsyncIterator[dict[str, Any]]) -> AsyncIterator[str]:
    """Encode chunks as SSE ``data`` payloads, ending with ``[DONE]``.

    Args:
        chunks: chunk dicts; the iterator is closed when this generator is closed
            (a client disconnect), which cancels the generation behind it.

    Yields:
        The ``data`` field of each event (JSON text, or ``[DONE]``).
    """
    try:
        async for chunk in chunks:
            yield json.dumps(chunk, ensure_ascii=False)
    except ServiceError as exc:
        yield json.dumps(exc.to_dict(), ensure_ascii=False)
    except Exception:  # the stream has started: report in-band, keep the server up
        logger.exception("stream failed")
        yield json.dumps(ServiceError("The server failed while generating.").to_dict())
    finally:
        await chunks.aclose()
    yield DONE
