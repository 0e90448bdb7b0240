"""Benchmark the embedded engine's torch runner per weight dtype: load time, time to first token, decode speed.

Usage::

    python benchmarks/bench_engine.py [--skip-cold] [--max-tokens 64] [--dtypes bfloat16,float32]

Prints a table (one column per weight dtype, measured side by side in one run) and writes
``benchmarks/results/engine.json``; the engine's default ``auto`` picks one of them. The cold load converts the
bundled GGUF into a fresh temporary cache (as a first start does); the warm load reads
that cache back (as every later start does). With ``--skip-cold`` only the normal cache
is used. Decode speed is measured on the same eight prompts, one request at a time and
all eight at once. Greedy decoding; a request may stop early at end-of-sequence, so
speeds are computed from the tokens actually generated.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

from mcp_server.catalog import default_entry
from mcp_server.engines.base import GenerationRequest, SamplingParams
from mcp_server.engines.embedded.engine import EmbeddedEngine
from mcp_server.engines.embedded.model_files import resolve_dtype

logger = logging.getLogger("bench_engine")

PROMPTS = [
    "Write a short story about a robot who learns to paint.",
    "Explain how a rainbow forms, step by step.",
    "Describe your ideal vacation in detail.",
    "What are the benefits of regular exercise? Give several reasons.",
    "Write a poem about autumn leaves.",
    "Explain how a computer works to a child.",
    "Tell me about the history of the Roman Empire.",
    "Give me ten tips for learning a new language.",
]
RESULTS = Path(__file__).parent / "results" / "engine.json"


async def timed_start(engine: EmbeddedEngine) -> float:
    started = time.perf_counter()
    await engine.start()
    return time.perf_counter() - started


async def one(engine: EmbeddedEngine, prompt: str, max_tokens: int) -> dict[str, float]:
    """Run one greedy request; return its time to first token, decode time and token count."""
    request = GenerationRequest(
        model=engine.models[0].id,
        messages=[{"role": "user", "content": prompt}],
        max_tokens=max_tokens,
        sampling=SamplingParams(temperature=0.0),
    )
    started = time.perf_counter()
    first = last = None
    tokens = 0
    async for delta in engine.generate(request):
        last = time.perf_counter()
        first = first or last
        tokens = delta.completion_tokens
    return {"ttft_s": first - started, "decode_s": last - first, "tokens": tokens, "end": last}


def raw_decode_speed(engine: EmbeddedEngine, steps: int) -> float:
    """Tokens/s of a bare transformers greedy loop (batch 1), the yardstick for engine overhead."""
    model = engine.model
    messages = [{"role": "user", "content": PROMPTS[0]}]
    prompt = engine.tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_dict=True)
    with torch.inference_mode():
        out = model(input_ids=torch.tensor([prompt["input_ids"]]), use_cache=True, logits_to_keep=1)
        started = time.perf_counter()
        for _ in range(steps):
            token = out.logits[:, -1].argmax(dim=-1, keepdim=True)
            out = model(input_ids=token, cache=out.cache, use_cache=True)
    return steps / (time.perf_counter() - started)


async def measure(engine: EmbeddedEngine, max_tokens: int) -> dict[str, float]:
    await one(engine, "Hello!", 4)  # warm-up
    raw = raw_decode_speed(engine, max_tokens)
    sequential = [await one(engine, p, max_tokens) for p in PROMPTS]
    started = time.perf_counter()
    concurrent = await asyncio.gather(*(one(engine, p, max_tokens) for p in PROMPTS))
    wall = max(r["end"] for r in concurrent) - started
    decode_1 = sum(r["tokens"] - 1 for r in sequential) / sum(r["decode_s"] for r in sequential)
    return {
        "raw_model_decode_tok_s_1_request": raw,
        "ttft_ms_median": 1000 * statistics.median(r["ttft_s"] for r in sequential),
        "decode_tok_s_1_request": decode_1,
        "decode_tok_s_8_concurrent_total": sum(r["tokens"] for r in concurrent) / wall,
        "ttft_ms_median_8_concurrent": 1000 * statistics.median(r["ttft_s"] for r in concurrent),
        "tokens_1_request": sum(r["tokens"] for r in sequential),
        "tokens_8_concurrent": sum(r["tokens"] for r in concurrent),
    }


async def measure_dtype(dtype: str, skip_cold: bool, max_tokens: int) -> dict:
    """Cold and warm load, then decode measurements, for one weight dtype."""
    results: dict = {}
    with tempfile.TemporaryDirectory() as scratch:
        cache_dir = None if skip_cold else scratch
        if not skip_cold:
            cold = EmbeddedEngine(cache_dir=cache_dir, dtype=dtype, runner="torch")
            results["load_cold_s"] = await timed_start(cold)
            await cold.aclose()
        engine = EmbeddedEngine(cache_dir=cache_dir, max_batch_size=8, dtype=dtype, runner="torch")
        results["load_warm_s"] = await timed_start(engine)
        try:
            results.update(await measure(engine, max_tokens))
        finally:
            await engine.aclose()
    return results


async def main(skip_cold: bool, max_tokens: int, dtypes: list[str]) -> dict:
    load_before = os.getloadavg()[0]
    results: dict = {"by_dtype": {}}
    for dtype in dtypes:
        results["by_dtype"][dtype] = await measure_dtype(dtype, skip_cold, max_tokens)
    results["environment"] = {
        "model": default_entry().id,
        "auto_dtype": resolve_dtype("auto"),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "max_tokens": max_tokens,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
        "load_average_before": load_before,
        "load_average_after": os.getloadavg()[0],
    }
    return results


ROWS = [
    ("model load, cold (GGUF -> cache)", "load_cold_s", "s"),
    ("model load, warm (from cache)", "load_warm_s", "s"),
    ("time to first token, 1 request (median)", "ttft_ms_median", "ms"),
    ("decode, 1 request", "decode_tok_s_1_request", "tok/s"),
    ("  (bare transformers loop, same model)", "raw_model_decode_tok_s_1_request", "tok/s"),
    ("decode, 8 concurrent (total)", "decode_tok_s_8_concurrent_total", "tok/s"),
    ("time to first token, 8 concurrent (median)", "ttft_ms_median_8_concurrent", "ms"),
]


def report(results: dict) -> str:
    dtypes = list(results["by_dtype"])
    lines = [f"{'metric':<44} " + " ".join(f"{d:>10}" for d in dtypes) + "  unit", "-" * (52 + 11 * len(dtypes))]
    for name, key, unit in ROWS:
        values = [results["by_dtype"][d].get(key) for d in dtypes]
        if any(v is not None for v in values):
            cells = " ".join(f"{v:>10.1f}" if v is not None else f"{'-':>10}" for v in values)
            lines.append(f"{name:<44} {cells}  {unit}")
    env = results["environment"]
    lines.append(
        f"(auto dtype here: {env['auto_dtype']}; CPU capability {env['cpu_capability']}; {env['cpus']} CPUs, "
        f"{env['torch_threads']} torch threads, load average {env['load_average_before']:.1f})"
    )
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-cold", action="store_true", help="do not measure the GGUF conversion")
    parser.add_argument("--max-tokens", type=int, default=64, help="tokens per request (default 64)")
    parser.add_argument("--dtypes", default="bfloat16,float32", help="weight dtypes to compare, comma-separated")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    outcome = asyncio.run(main(args.skip_cold, args.max_tokens, args.dtypes.split(",")))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(outcome, indent=2) + "\n")
    logger.info("%s\nwritten to %s", report(outcome), RESULTS)
