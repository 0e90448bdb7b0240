"""Grammar benchmark over JSONSchemaBench: coverage, compile time and per-token mask cost, per backend.

Run: ``.venv/bin/python benchmarks/bench_grammar.py [--backend llguidance|xgrammar ...] [--data DIR] [--no-model]``.

For every schema file in ``tests/data/maskbench/`` (the 276-schema sample; ``--data DIR`` for
another folder in the same format, e.g. ``tests/data/jsonschemabench``, see its README) and
per source (the file-name prefix: ``BFCL``, ``Github``, ...), for each grammar backend
(:mod:`mcp_server.engines.embedded.decoding.backends`), through the product's path
(:func:`mcp_server.engines.embedded.decoding.constraints.compile_response_format`):

* schemas compiled, and refused with ``InvalidRequest`` (the keyword named);
* valid instances accepted token by token (then the end of the answer);
* invalid instances rejected by the grammar, or else caught by ``validate_output`` (an
  invalid instance that passes both would be an invalid answer let through);
* compile time p50/p99, and the mask's cost per token (fill the bitmask + apply it to the
  logits) mean and p99, for one row, and per decode step for 8 sequences at once (8
  instances stepped together, masks filled as the scheduler fills them);
* a decode step of 8 sequences on the llama.cpp runner (the bundled model), to put the mask
  cost in proportion.

Prints a table and writes ``benchmarks/results/grammar.json``. :func:`evaluate` is also used
by ``tests/test_jsonschemabench.py``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mcp_server.engines.embedded.decoding.backends import (  # noqa: E402
    GRAMMAR_BACKENDS,
    allocate_bitmask,
    fill_masks,
    make_backend,
)
from mcp_server.engines.embedded.decoding.constraints import (  # noqa: E402
    compile_response_format,
    validate_output,
)
from mcp_server.engines.embedded.decoding.grammar_cache import GrammarCache  # noqa: E402
from mcp_server.engines.embedded.model_files import load_tokenizer  # noqa: E402
from mcp_server.engines.embedded.sampling import apply_bitmask  # noqa: E402
from mcp_server.errors import InvalidRequest  # noqa: E402

DATA = ROOT / "tests" / "data" / "jsonschemabench"
SAMPLE = ROOT / "tests" / "data" / "maskbench"
VOCAB = 49152


@dataclass
class SourceStats:
    """Counts for one source (or all). Times in milliseconds."""

    schemas: int = 0
    compiled: int = 0
    rejected: int = 0
    valid: int = 0
    valid_accepted: int = 0
    invalid: int = 0
    invalid_rejected_by_grammar: int = 0
    invalid_caught_by_final_check: int = 0
    invalid_let_through: int = 0
    compile_ms: list[float] = field(default_factory=list)
    token_ms: list[float] = field(default_factory=list)
    step8_ms: list[float] = field(default_factory=list)
    rejections: Counter = field(default_factory=Counter)


def source_of(path: Path) -> str:
    """``BFCL_parallel_17.json`` -> ``BFCL``; ``Kubernetes---kb_1.json`` -> ``Kubernetes``."""
    return path.stem.split("---")[0].split("_")[0]


def grammar_order(value: Any, schema: Any, validator: Any) -> Any:
    """Reorder object keys the way the grammar emits them: declared properties first.

    ``anyOf``/``oneOf``/``allOf`` follow the first branch the value validates against;
    ``validator`` is a jsonschema validator of the root schema (for ``$ref``).
    """
    while isinstance(schema, dict) and "$ref" in schema:
        schema = validator._resolver.lookup(schema["$ref"]).contents
    if not isinstance(schema, dict):
        return value
    for keyword in ("anyOf", "oneOf", "allOf"):
        branches = [b for b in schema.get(keyword, []) if validator.evolve(schema=b).is_valid(value)]
        if branches:
            return grammar_order(value, branches[0], validator)
    if isinstance(value, dict):
        props = schema.get("properties", {})
        keys = [k for k in props if k in value] + [k for k in value if k not in props]
        extra = schema.get("additionalProperties", {})
        return {k: grammar_order(value[k], props.get(k, extra), validator) for k in keys}
    if isinstance(value, list):
        prefix = schema.get("prefixItems", [])
        items = schema.get("items", {})
        return [grammar_order(v, prefix[i] if i < len(prefix) else items, validator) for i, v in enumerate(value)]
    return value


def response_format(schema: Any) -> dict[str, Any]:
    """A ``json_schema`` response_format around ``schema``."""
    return {"type": "json_schema", "json_schema": {"name": "bench", "schema": schema}}


def backend_for(name: str, tokenizer: Any) -> Any:
    """The grammar backend ``name`` for the bundled model (its vocabulary and end token)."""
    return make_backend(name, tokenizer, VOCAB, [tokenizer.eos_token_id], 2)


def matches(backend: Any, grammar: Any, token_ids: list[int], eos: int, times: list[float] | None) -> bool:
    """Feed tokens, then the end token; True when all are accepted and the grammar ended.

    With ``times``, each step also fills a one-row bitmask and applies it to float32 logits,
    and appends its duration (ms).
    """
    matcher = backend.matcher(grammar)
    bitmask = allocate_bitmask(1, VOCAB)
    logits = np.zeros((1, VOCAB), dtype=np.float32)
    for token in [*token_ids, eos]:
        start = time.perf_counter()
        if times is not None:
            fill_masks([(matcher, 0)], bitmask)
            apply_bitmask(logits, bitmask)
        accepted = matcher.accept(token)
        if times is not None:
            times.append((time.perf_counter() - start) * 1000)
        if not accepted:
            return False
    return matcher.is_terminated()


def batch_step_ms(backend: Any, runs: list[tuple[Any, list[int]]], rows: int = 8) -> list[float]:
    """Mask cost per decode step with ``rows`` sequences: instances stepped together, the
    bitmask filled for all rows at once (as the scheduler does) and applied. Returns ms per step."""
    steps: list[float] = []
    for first in range(0, len(runs) - rows + 1, rows):
        group = [(backend.matcher(g), ids) for g, ids in runs[first : first + rows]]
        bitmask = allocate_bitmask(rows, VOCAB)
        logits = np.zeros((rows, VOCAB), dtype=np.float32)
        for k in range(min(len(ids) for _, ids in group)):
            start = time.perf_counter()
            fill_masks([(m, i) for i, (m, _) in enumerate(group)], bitmask)
            apply_bitmask(logits, bitmask)
            steps.append((time.perf_counter() - start) * 1000)
            for m, ids in group:
                m.accept(ids[k])
    return steps


def evaluate(backend: Any, tokenizer: Any, files: list[Path], timed: bool = False) -> dict[str, SourceStats]:
    """Run a backend over dataset files; stats per source plus ``ALL``.

    Compile time includes the first matcher and its first mask (llguidance compiles lazily).
    With ``timed``, the mask cost per token and per 8-row step are measured too (the latter
    only in ``ALL``).
    """
    stats: dict[str, SourceStats] = defaultdict(SourceStats)
    eos = tokenizer.eos_token_id
    runs: list[tuple[Any, list[int]]] = []
    for path in files:
        case = json.loads(path.read_text())
        per = [stats[source_of(path)], stats["ALL"]]
        for s in per:
            s.schemas += 1
        start = time.perf_counter()
        try:
            grammar = compile_response_format(backend, response_format(case["schema"]), GrammarCache(sizeof=backend.size_bytes))
            fill_masks([(backend.matcher(grammar), 0)], allocate_bitmask(1, VOCAB))
        except InvalidRequest as exc:
            for s in per:
                s.rejected += 1
                s.rejections[exc.message.split(" at ")[0].split(" is ")[0].split(" (")[0][:60]] += 1
            continue
        elapsed = (time.perf_counter() - start) * 1000
        validator = jsonschema.validators.validator_for(case["schema"])(case["schema"])
        outcome: Counter = Counter()
        times: list[float] = []
        for test in case["tests"]:
            text = json.dumps(grammar_order(test["data"], case["schema"], validator), separators=(",", ":"), ensure_ascii=False)
            ids = tokenizer.encode(text, add_special_tokens=False)
            accepted = matches(backend, grammar, ids, eos, times if timed else None)
            if test["valid"]:
                outcome["valid"] += 1
                outcome["valid_accepted"] += accepted
                if accepted:
                    runs.append((grammar, ids))
            else:
                outcome["invalid"] += 1
                outcome["invalid_rejected_by_grammar"] += not accepted
                caught = accepted and validate_output(text, response_format(case["schema"])) is not None
                outcome["invalid_caught_by_final_check"] += caught
                outcome["invalid_let_through"] += accepted and not caught
        for s in per:
            s.compiled += 1
            s.compile_ms.append(elapsed)
            s.token_ms.extend(times)
            for key, count in outcome.items():
                setattr(s, key, getattr(s, key) + count)
    if timed:
        stats["ALL"].step8_ms = batch_step_ms(backend, runs)
    return dict(stats)


def decode_step_ms(rows: int = 8, steps: int = 32) -> float:
    """Median decode step (ms) of ``rows`` sequences on the llama.cpp runner (the bundled model, default settings)."""
    from mcp_server.engines.embedded.model_files import default_gguf_path
    from mcp_server.engines.embedded.runners import resolve_threads
    from mcp_server.engines.embedded.runners.llamacpp import DEFAULT_KV_CACHE_DTYPE, LlamaCppRunner

    runner = LlamaCppRunner(default_gguf_path(), rows, None, resolve_threads(None), True, DEFAULT_KV_CACHE_DTYPE, "auto")
    try:
        slots = [runner.admit([1, 100 + i, 200, 300])[0] for i in range(rows)]
        for slot in slots:
            runner.prefill(slot, 4)
        durations = []
        for step in range(steps):
            start = time.perf_counter()
            runner.decode(slots, [400 + step] * rows)
            durations.append((time.perf_counter() - start) * 1000)
        return statistics.median(durations)
    finally:
        runner.close()


def percentile(values: list[float], q: float) -> float:
    """The q-quantile (0..1) of values, nearest rank; 0 for none."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


def summary(s: SourceStats) -> dict[str, Any]:
    """Shares, counts and time percentiles of one SourceStats."""
    share = lambda a, b: round(a / b, 3) if b else None  # noqa: E731
    mean = lambda v: round(statistics.fmean(v), 4) if v else None  # noqa: E731
    row = {k: v for k, v in asdict(s).items() if k not in ("compile_ms", "token_ms", "step8_ms", "rejections")}
    row.update(
        compiled_share=share(s.compiled, s.schemas),
        refused_share=share(s.rejected, s.schemas),
        valid_accepted_share=share(s.valid_accepted, s.valid),
        invalid_rejected_share=share(s.invalid_rejected_by_grammar, s.invalid),
        compile_ms_p50=round(percentile(s.compile_ms, 0.5), 2),
        compile_ms_p99=round(percentile(s.compile_ms, 0.99), 2),
        token_ms_mean=mean(s.token_ms),
        token_ms_p99=round(percentile(s.token_ms, 0.99), 4),
        step8_ms_mean=mean(s.step8_ms),
        step8_ms_p99=round(percentile(s.step8_ms, 0.99), 4),
        rejections=dict(s.rejections),
    )
    return row


def main() -> None:
    """Run the benchmark, print the table, write ``benchmarks/results/grammar.json``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-model", action="store_true", help="skip the decode-step measurement")
    parser.add_argument("--data", type=Path, default=SAMPLE, help="folder of JSONSchemaBench-format files")
    parser.add_argument("--backend", action="append", choices=GRAMMAR_BACKENDS, help="repeatable; default: both")
    args = parser.parse_args()
    tokenizer = load_tokenizer()
    files = sorted(args.data.glob("*.json"))
    results: dict[str, Any] = {"files": len(files), "data": str(args.data.relative_to(ROOT)), "backends": {}}
    for name in args.backend or GRAMMAR_BACKENDS:
        stats = evaluate(backend_for(name, tokenizer), tokenizer, files, timed=True)
        results["backends"][name] = {source: summary(s) for source, s in sorted(stats.items())}
    step = None if args.no_model else decode_step_ms()
    results["decode_step_8_ms"] = step
    print(f"{'backend':10} {'source':16} {'schemas':>7} {'compiled':>8} {'refused':>7} {'valid ok':>9} {'invalid rej':>11} "
          f"{'caught':>6} {'through':>7} {'cmp p50':>8} {'cmp p99':>8} {'tok mean':>8} {'tok p99':>7} {'8row mean':>9} {'8row p99':>8}")  # fmt: skip
    for name, rows in results["backends"].items():
        for source, r in rows.items():
            print(f"{name:10} {source:16} {r['schemas']:7} {r['compiled_share']:8.1%} {r['rejected']:7} "
                  f"{r['valid_accepted']:4}/{r['valid']:<4} {r['invalid_rejected_by_grammar']:5}/{r['invalid']:<5} "
                  f"{r['invalid_caught_by_final_check']:6} {r['invalid_let_through']:7} {r['compile_ms_p50']:8.2f} "
                  f"{r['compile_ms_p99']:8.1f} {r['token_ms_mean'] or 0:8.4f} {r['token_ms_p99']:7.4f} "
                  f"{r['step8_ms_mean'] or 0:9.4f} {r['step8_ms_p99']:8.4f}")  # fmt: skip
    if step:
        print(f"decode step, 8 sequences, llama.cpp runner: {step:.2f} ms; mask per step at 8 as a share of it: "
              + ", ".join(f"{n} {(r['ALL']['step8_ms_mean'] or 0) / step:.2%}" for n, r in results["backends"].items()))  # fmt: skip
    out = ROOT / "benchmarks" / "results" / "grammar.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
