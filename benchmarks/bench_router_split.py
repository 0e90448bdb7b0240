"""How the SGLang router (``sglang-router`` 0.3.2) splits concurrent requests over two chatcap replicas.

Usage::

    python benchmarks/bench_router_split.py [--requests 16] [--chunks 100]

Two ``chatcap serve`` replicas attach to a slow stand-in SGLang upstream
(:mod:`tests.stream_stand_in`, 10 ms between chunks, so ``--chunks`` 100 makes each request last
about a second and the requests overlap). For each router configuration below the real
router starts in front of them (``--disable-retries``, as the README's recipe), and
``--requests`` streamed requests are sent at once, twice: all with the same prompt (what a
prefix cache attracts), then each with its own prompt; then the same prompt ``--requests``
times one after the other (where a cache-aware router should keep to one replica). A replica's share is the change of
its ``chatcap_http_requests_total`` for ``/v1/chat/completions``. Prints a table and writes
``benchmarks/results/router_split.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.live_server import free_port, spawn_healthy, start_server, stop_process  # noqa: E402
from tests.stream_stand_in import MODEL, running_stand_in  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "router_split.json"
CONFIGURATIONS = {
    "round_robin": ["--policy", "round_robin"],
    "cache_aware (defaults: abs 64, rel 1.5)": ["--policy", "cache_aware"],
    "cache_aware abs 2, rel 1.1": ["--policy", "cache_aware", "--balance-abs-threshold", "2",
                                   "--balance-rel-threshold", "1.1"],
    "cache_aware abs 1, rel 1.0": ["--policy", "cache_aware", "--balance-abs-threshold", "1",
                                   "--balance-rel-threshold", "1.0"],
}

SCENARIOS = [("same prompt", True, True), ("distinct prompts", False, True), ("same prompt, in turn", True, False)]


def _answered(base_url: str) -> float:
    text = httpx.get(f"{base_url}/metrics", timeout=10).text
    pattern = r'^chatcap_http_requests_total\{path="/v1/chat/completions",status="200"\} (\S+)$'
    return sum(float(value) for value in re.findall(pattern, text, re.M))


async def _burst(router: str, requests: int, chunks: int, same_prompt: bool, at_once: bool) -> None:
    async def one(http: httpx.AsyncClient, i: int) -> None:
        prompt = "Tell me a long story about a lighthouse keeper." if same_prompt else f"Story {i}: {'abc' * i}"
        body = {"model": MODEL, "messages": [{"role": "user", "content": prompt}], "max_tokens": chunks,
                "stream": True}
        async with http.stream("POST", f"{router}/v1/chat/completions", json=body) as reply:
            reply.raise_for_status()
            async for _ in reply.aiter_lines():
                pass

    async with httpx.AsyncClient(timeout=120, limits=httpx.Limits(max_connections=requests)) as http:
        if at_once:
            await asyncio.gather(*(one(http, i) for i in range(requests)))
        else:
            for i in range(requests):
                await one(http, i)


def _split(router: str, replicas: list, args: argparse.Namespace, same_prompt: bool, at_once: bool) -> list[int]:
    before = [_answered(r.base_url) for r in replicas]
    asyncio.run(_burst(router, args.requests, args.chunks, same_prompt, at_once))
    return [round(_answered(r.base_url) - b) for r, b in zip(replicas, before, strict=True)]


def _run(flags: list[str], replicas: list, logs: Path, args: argparse.Namespace) -> dict[str, list[int]]:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "sglang_router.launch_router", "--host", "127.0.0.1", "--port", str(port),
               "--worker-urls", *(r.base_url for r in replicas), *flags, "--disable-retries",
               "--health-check-timeout-secs", "1"]
    router = spawn_healthy(command, logs / f"router-{port}.log", f"{base}/health", 120)
    try:
        deadline = time.monotonic() + 60
        while sum(w["is_healthy"] for w in httpx.get(f"{base}/workers", timeout=10).json()["workers"]) < 2:
            if time.monotonic() > deadline:
                raise RuntimeError("the router did not register both replicas")
            time.sleep(0.2)
        return {scenario: _split(base, replicas, args, same, at_once) for scenario, same, at_once in SCENARIOS}
    finally:
        stop_process(router)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=16, help="requests sent at once")
    parser.add_argument("--chunks", type=int, default=100, help="chunks per answer (10 ms apart)")
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as folder, running_stand_in(delay=0.01, batch=1) as upstream:
        logs = Path(folder)
        replicas = [start_server(logs, "--engine", "sglang", "--sglang-url", upstream, "--log-level", "warning")
                    for _ in range(2)]
        try:
            for name, flags in CONFIGURATIONS.items():
                results[name] = _run(flags, replicas, logs, args)
        finally:
            for replica in replicas:
                replica.stop()
    print(f"{'router':42}", *(f"{scenario:>21}" for scenario, _, _ in SCENARIOS))
    for name, split in results.items():
        print(f"{name:42}", *(f"{'/'.join(map(str, split[scenario])):>21}" for scenario, _, _ in SCENARIOS))
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps({"requests": args.requests, "chunks": args.chunks, "split": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
