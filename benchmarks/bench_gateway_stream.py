"""Gateway streaming benchmark: how many streamed chunks one ``chatcap serve`` passes, and its CPU per chunk.

Usage::

    python benchmarks/bench_gateway_stream.py [--chunks 2000] [--concurrency 8] [--requests 32] [--keyed]

A stand-in for SGLang (an SGLang-shaped OpenAI server, written on raw asyncio sockets so it
costs little: ``GET /v1/models`` and a streamed ``POST /v1/chat/completions`` whose events
carry SGLang's continuous usage) sends ``--chunks`` content chunks per request as fast as
the socket takes them. ``chatcap serve --engine sglang --sglang-url <stand-in>`` runs in
front of it, with ``--threads 1``. The same client (httpx, ``--concurrency`` streams at a
time, ``--requests`` in all, each counting its ``data:`` events) measures:

* ``direct``: the stand-in alone (what the client and the stand-in can carry);
* ``through chatcap``: via chatcap (``--keyed``: with an API key of a data directory,
  so the key store and ledger are on the path);

and reports chunks/s for each, and for chatcap the user + system CPU seconds of its process
(from ``/proc``) per chunk, in µs. Prints a table and writes
``benchmarks/results/gateway_stream.json``. No assertion is made on any number; on a
shared machine they are noisy, so compare lines of one run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.live_server import free_port, start_server  # noqa: E402

MODEL = "stand-in"
RESULTS = Path(__file__).resolve().parent / "results" / "gateway_stream.json"


def _event(payload: dict) -> bytes:
    return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"


async def _stand_in(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """One connection of the stand-in: GET /v1/models, or a streamed chat completion."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
        request_line, *header_lines = head.decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in header_lines if line)}
        body = await reader.readexactly(int(headers.get("content-length", 0)))
        if request_line.startswith("GET /v1/models"):
            payload = json.dumps({"object": "list", "data": [{"id": MODEL, "object": "model", "owned_by": "bench"}]})
            writer.write(f"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {len(payload)}"
                         f"\r\nconnection: close\r\n\r\n{payload}".encode())
            return
        chunks = json.loads(body).get("max_completion_tokens") or 256
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n")
        base = {"id": "chatcmpl-standin", "object": "chat.completion.chunk", "created": int(time.time()), "model": MODEL}
        usage = {"prompt_tokens": 10, "completion_tokens": 0, "total_tokens": 10}
        writer.write(_event({**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""},
                                                  "finish_reason": None}], "usage": usage}))
        batch = []
        for i in range(1, chunks + 1):
            usage = {"prompt_tokens": 10, "completion_tokens": i, "total_tokens": 10 + i}
            batch.append(_event({**base, "choices": [{"index": 0, "delta": {"content": " tok"}, "logprobs": None,
                                                      "finish_reason": None}], "usage": usage}))
            if len(batch) == 64:
                writer.write(b"".join(batch))
                batch.clear()
                await writer.drain()
        batch.append(_event({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "length"}], "usage": usage}))
        batch.append(_event({**base, "choices": [], "usage": usage}))
        batch.append(b"data: [DONE]\n\n")
        writer.write(b"".join(batch))
        await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _drive(base_url: str, chunks: int, concurrency: int, requests: int, key: str | None) -> dict:
    """Stream ``requests`` completions, ``concurrency`` at a time; count the content chunks."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Go."}], "max_tokens": chunks, "stream": True}
    left = iter(range(requests))
    counted = 0

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal counted
        for _ in left:
            async with client.stream("POST", f"{base_url}/v1/chat/completions", json=body, headers=headers) as reply:
                reply.raise_for_status()
                async for line in reply.aiter_lines():
                    if line.startswith("data: {") and '" tok"' in line:  # a content chunk
                        counted += 1

    async with httpx.AsyncClient(timeout=120, limits=httpx.Limits(max_connections=concurrency)) as client:
        started = time.monotonic()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        elapsed = time.monotonic() - started
    return {"chunks": counted, "seconds": elapsed, "chunks_per_s": counted / elapsed}


async def _main(args: argparse.Namespace) -> dict:
    server = await asyncio.start_server(_stand_in, "127.0.0.1", 0)
    upstream = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    results: dict = {"chunks_per_request": args.chunks, "concurrency": args.concurrency, "requests": args.requests}
    results["direct"] = await _drive(upstream, args.chunks, args.concurrency, args.requests, None)
    with tempfile.TemporaryDirectory() as folder:
        flags = ["--engine", "sglang", "--sglang-url", upstream, "--threads", "1", "--log-level", "warning"]
        key = None
        if args.keyed:
            from mcp_server.gateway import KeyStore
            from mcp_server.gateway.db import Database

            store = KeyStore(Database.open(Path(folder)))
            key = store.create("bench", credit_usd=1000)[1]
            store.db.close()
            flags += ["--data-dir", folder]
        live = await asyncio.to_thread(start_server, Path(folder), *flags)
        try:
            await _drive(live.base_url, 50, 1, 2, key)  # warm up
            before = _cpu_seconds(live.process.pid)
            run = await _drive(live.base_url, args.chunks, args.concurrency, args.requests, key)
            run["cpu_seconds"] = _cpu_seconds(live.process.pid) - before
            run["cpu_us_per_chunk"] = run["cpu_seconds"] / run["chunks"] * 1e6
            results["through_chatcap"] = run
        finally:
            live.stop()
    server.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=2000, help="content chunks per request")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--requests", type=int, default=32)
    parser.add_argument("--keyed", action="store_true", help="send an API key of a data directory")
    results = asyncio.run(_main(parser.parse_args()))
    direct, through = results["direct"], results["through_chatcap"]
    print(f"{'':18} {'chunks/s':>10} {'CPU µs/chunk':>13}")
    print(f"{'direct':18} {direct['chunks_per_s']:>10,.0f} {'':>13}")
    print(f"{'through chatcap':18} {through['chunks_per_s']:>10,.0f} {through['cpu_us_per_chunk']:>13.1f}")
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
