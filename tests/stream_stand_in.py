"""A stand-in for an SGLang server: an SGLang-shaped OpenAI server on raw asyncio sockets.

It answers ``GET /v1/models`` (one model, :data:`MODEL`) and a streamed
``POST /v1/chat/completions`` with ``max_completion_tokens`` content chunks of ``" tok"``
(256 when absent), each carrying SGLang's continuous usage (10 prompt tokens), then the
``length`` chunk, the usage chunk and ``[DONE]``. It costs little, so it measures the
gateway in front of it (``benchmarks/bench_gateway_stream.py``) and lets the ``--workers``
tests run without a model.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["MODEL", "StandIn", "running_stand_in"]

MODEL = "stand-in"


def _event(payload: dict) -> bytes:
    return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"


class StandIn:
    """The connection handler of the stand-in (``asyncio.start_server(StandIn(), ...)``).

    Args:
        delay: seconds to wait after each batch of 64 chunks (0: as fast as the socket takes them;
            above 0, with ``batch=1``, a slow stream for the drain tests).
        batch: chunks written together.
        context_length: the ``max_model_len`` ``/v1/models`` reports (what chatcap reserves credit for).
    """

    def __init__(self, delay: float = 0.0, batch: int = 64, context_length: int = 32768):
        self.delay, self.batch, self.context_length = delay, batch, context_length

    async def __call__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            request_line, *header_lines = head.decode("latin-1").split("\r\n")
            headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in header_lines if line)}
            body = await reader.readexactly(int(headers.get("content-length", 0)))
            if request_line.startswith("GET /v1/models"):
                payload = json.dumps({"object": "list", "data": [{"id": MODEL, "object": "model", "owned_by": "bench",
                                                                 "max_model_len": self.context_length}]})
                writer.write(f"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {len(payload)}"
                             f"\r\nconnection: close\r\n\r\n{payload}".encode())
                return
            if not request_line.startswith("POST /v1/chat/completions"):  # e.g. /server_info: not an SGLang of ours
                writer.write(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                return
            chunks = json.loads(body).get("max_completion_tokens") or 256
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n")
            base = {"id": "chatcmpl-standin", "object": "chat.completion.chunk", "created": int(time.time()),
                    "model": MODEL}
            usage = {"prompt_tokens": 10, "completion_tokens": 0, "total_tokens": 10}
            writer.write(_event({**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""},
                                                      "finish_reason": None}], "usage": usage}))
            batch = []
            for i in range(1, chunks + 1):
                usage = {"prompt_tokens": 10, "completion_tokens": i, "total_tokens": 10 + i}
                batch.append(_event({**base, "choices": [{"index": 0, "delta": {"content": " tok"}, "logprobs": None,
                                                          "finish_reason": None}], "usage": usage}))
                if len(batch) == self.batch:
                    writer.write(b"".join(batch))
                    batch.clear()
                    await writer.drain()
                    if self.delay:
                        await asyncio.sleep(self.delay)
            batch.append(_event({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "length"}],
                                 "usage": usage}))
            batch.append(_event({**base, "choices": [], "usage": usage}))
            batch.append(b"data: [DONE]\n\n")
            writer.write(b"".join(batch))
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@contextmanager
def running_stand_in(**options) -> Iterator[str]:
    """Run a :class:`StandIn` (``options`` are its arguments) on a loopback port in a thread of
    its own; yields its base URL."""
    loop = asyncio.new_event_loop()
    holder: list = []

    async def serve() -> None:
        holder.append(await asyncio.start_server(StandIn(**options), "127.0.0.1", 0))

    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(serve(), loop).result(30)
    try:
        yield f"http://127.0.0.1:{holder[0].sockets[0].getsockname()[1]}"
    finally:
        holder[0].close()
        loop.call_soon_threadsafe(loop.stop)
        thread.join(30)
