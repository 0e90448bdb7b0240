"""SSE framing and coalescing: ready events share one write, none waits for a later one, and
closing the stream closes the events behind it."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from mcp_server.errors import InvalidRequest
from mcp_server.surfaces.sse import coalesce, sse_events


async def _chunks(items, closed: list[str], fail: Exception | None = None):
    try:
        for item in items:
            yield item
        if fail is not None:
            raise fail
    finally:
        closed.append("chunks")


def test_events_are_framed_in_order_ending_with_done():
    async def main():
        closed: list[str] = []
        return [e async for e in sse_events(_chunks([{"a": 1}, {"b": "é"}], closed))], closed

    events, closed = asyncio.run(main())
    assert events == [b'data: {"a":1}\r\n\r\n', 'data: {"b":"é"}\r\n\r\n'.encode(), b"data: [DONE]\r\n\r\n"]
    assert closed == ["chunks"]


def test_an_error_after_the_start_is_an_error_event_then_done():
    async def main():
        fail = InvalidRequest("bad schema", param="response_format")
        return [e async for e in sse_events(_chunks([{"a": 1}], [], fail))]

    events = asyncio.run(main())
    assert orjson.loads(events[1][len(b"data: "):])["error"]["param"] == "response_format"
    assert events[-1] == b"data: [DONE]\r\n\r\n"


def test_ready_events_share_a_write_and_none_waits_for_the_next():
    async def main():
        gate = asyncio.Event()

        async def events():
            for i in range(5):
                yield f"{i};".encode()  # five ready at once
            await gate.wait()  # the sixth only once the client has the first five
            yield b"5;"

        writes = []
        async for write in coalesce(events()):
            writes.append(write)
            gate.set()
        return writes

    writes = asyncio.run(main())
    assert b"".join(writes) == b"0;1;2;3;4;5;"
    assert len(writes) < 6 and writes[-1] == b"5;"


def test_closing_the_stream_closes_the_events_and_errors_pass_through():
    async def main():
        closed: list[str] = []
        stream = coalesce(sse_events(_chunks(({"i": i} for i in range(10_000)), closed)), limit=4)
        first = await anext(stream)
        await stream.aclose()  # the client went away
        return first, closed

    first, closed = asyncio.run(main())
    assert first.startswith(b'data: {"i":0}') and closed == ["chunks"]

    async def failing():
        yield b"a"
        raise RuntimeError("read failed")

    async def drain():
        return [w async for w in coalesce(failing())]

    with pytest.raises(RuntimeError, match="read failed"):
        asyncio.run(drain())
