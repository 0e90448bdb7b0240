"""Gateway streaming benchmark: how many streamed chunks one ``chatcap serve`` passes, and its CPU per chunk.

Usage::

    python benchmarks/bench_gateway_stream.py [--chunks 2000] [--concurrency 8] [--requests 32] [--keyed]
        [--workers 1,2]

A stand-in for SGLang (:mod:`tests.stream_stand_in`: an SGLang-shaped OpenAI server, written on raw
asyncio sockets so it costs little: ``GET /v1/models`` and a streamed ``POST
/v1/chat/completions`` whose events carry SGLang's continuous usage) sends ``--chunks``
content chunks per request as fast as the socket takes them. ``chatcap serve --engine sglang
--sglang-url <stand-in> --workers N`` runs in front of it, with ``--threads 1``, once per
``--workers`` value. The same client (raw asyncio in one process, ``--concurrency`` streams
at a time on a fresh connection each, ``--requests`` in all, counting the content chunks)
measures:

* ``direct``: the stand-in alone (what the client and the stand-in can carry);
* ``chatcap, N worker(s)``: via chatcap (``--keyed``: with an API key of a data directory,
  so the key store and ledger are on the path);

and reports chunks/s for each, the ratio to one worker, and for chatcap the user + system
CPU seconds of its processes (the parent and its workers, from ``/proc``) per chunk, in µs.
The client, the stand-in and the workers share the machine's cores: a run scales with
workers only while cores are left over for them (the table's last line gives the core
count and the load average). Prints a table and writes
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

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.live_server import start_server, wait_for_workers  # noqa: E402
from tests.stream_stand_in import MODEL, StandIn  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "gateway_stream.json"


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of ``pid`` and its child processes (the ``--workers``), living ones."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    own = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return own + sum(_cpu_seconds(int(child)) for child in children)


async def _drive(base_url: str, chunks: int, concurrency: int, requests: int, key: str | None) -> dict:
    """Stream ``requests`` completions, ``concurrency`` at a time, each on a connection of its
    own (the kernel hands each to one of chatcap's workers); count the content chunks.

    The client is raw asyncio: it counts the chunks' ``" tok"`` in the bytes as they come
    (each server writes whole events, so no chunk straddles an HTTP/1.1 chunk frame), leaving
    the cores to the servers measured.
    """
    host, port = base_url.removeprefix("http://").split(":")
    body = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "Go."}], "max_tokens": chunks,
                       "stream": True}).encode()
    auth = f"authorization: Bearer {key}\r\n" if key else ""
    head = (f"POST /v1/chat/completions HTTP/1.1\r\nhost: {host}:{port}\r\ncontent-type: application/json\r\n"
            f"{auth}content-length: {len(body)}\r\nconnection: close\r\n\r\n").encode()
    left = iter(range(requests))
    counted = 0

    async def worker() -> None:
        nonlocal counted
        for _ in left:
            reader, writer = await asyncio.open_connection(host, int(port))
            writer.write(head + body)
            status = await reader.readline()
            if b" 200 " not in status:
                raise RuntimeError(f"{base_url}: {status.decode().strip()}")
            tail = b""
            while data := await reader.read(1 << 16):
                data = tail + data
                counted += data.count(b'" tok"')
                cut = data.rfind(b"\n")  # an event's content precedes its line's end
                tail = data[cut + 1:] if cut >= 0 else data
                counted -= tail.count(b'" tok"')
            writer.close()

    started = time.monotonic()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.monotonic() - started
    return {"chunks": counted, "seconds": elapsed, "chunks_per_s": counted / elapsed}


async def _main(args: argparse.Namespace) -> dict:
    server = await asyncio.start_server(StandIn(), "127.0.0.1", 0)
    upstream = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    results: dict = {"chunks_per_request": args.chunks, "concurrency": args.concurrency, "requests": args.requests,
                     "cores": os.cpu_count()}
    results["direct"] = await _drive(upstream, args.chunks, args.concurrency, args.requests, None)
    results["through_chatcap"] = {}
    for workers in args.workers:
        results["through_chatcap"][workers] = await _through_chatcap(upstream, args, workers)
    results["load_average"] = os.getloadavg()
    server.close()
    return results


async def _through_chatcap(upstream: str, args: argparse.Namespace, workers: int) -> dict:
    """The run through ``chatcap serve --workers <workers>`` in front of the stand-in."""
    with tempfile.TemporaryDirectory() as folder:
        flags = ["--engine", "sglang", "--sglang-url", upstream, "--threads", "1", "--log-level", "warning",
                 "--workers", str(workers)]
        key = None
        if args.keyed:
            from mcp_server.gateway.db import Database
            from mcp_server.gateway.keys import KeyStore

            store = KeyStore(Database.open(Path(folder)))
            key = store.create("bench", credit_usd=1000)[1]
            store.db.close()
            flags += ["--data-dir", folder]
        live = await asyncio.to_thread(start_server, Path(folder), *flags)
        try:
            if workers > 1:
                await asyncio.to_thread(wait_for_workers, live, workers)
            await _drive(live.base_url, 50, 2 * workers, 4 * workers, key)  # warm up every worker
            before = _cpu_seconds(live.process.pid)
            run = await _drive(live.base_url, args.chunks, args.concurrency, args.requests, key)
            run["cpu_seconds"] = _cpu_seconds(live.process.pid) - before
            run["cpu_us_per_chunk"] = run["cpu_seconds"] / run["chunks"] * 1e6
            return run
        finally:
            live.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=2000, help="content chunks per request")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--requests", type=int, default=32)
    parser.add_argument("--keyed", action="store_true", help="send an API key of a data directory")
    parser.add_argument("--workers", type=lambda text: [int(n) for n in text.split(",")], default=[1],
                        help="chatcap --workers values to run, comma-separated (e.g. 1,2,4)")
    results = asyncio.run(_main(parser.parse_args()))
    direct, runs = results["direct"], results["through_chatcap"]
    first = runs[1]["chunks_per_s"] if 1 in runs else None
    print(f"{'':22} {'chunks/s':>10} {'CPU µs/chunk':>13} {'vs 1 worker':>12}")
    print(f"{'direct':22} {direct['chunks_per_s']:>10,.0f}")
    for workers, run in runs.items():
        ratio = f"{run['chunks_per_s'] / first:>11.2f}x" if first else ""
        print(f"{f'chatcap, {workers} worker(s)':22} {run['chunks_per_s']:>10,.0f} {run['cpu_us_per_chunk']:>13.1f} {ratio}")
    print(f"{results['cores']} cores; load average after the run {results['load_average'][0]:.2f}")
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
