"""Grammar benchmark over JSONSchemaBench: coverage, compile time and per-token cost.

Run: ``.venv/bin/python benchmarks/bench_grammar.py [--no-model] [--no-llguidance]``.

For every schema file in ``tests/data/jsonschemabench/`` (or ``--data DIR``, a folder of
files in the same format; see that README) and per source (the file-name prefix: ``BFCL``, ``Github``, ...):

* the share of schemas compiled by :func:`mcp_server.engines.embedded.decoding.constraints.compile_response_format`
  (the rest are rejected with ``InvalidRequest``);
* valid instances accepted token by token by an ``xgrammar.GrammarMatcher``;
* invalid instances rejected by the grammar, or caught by ``validate_output``;
* compile time p50/p99 and the grammar's cost per token (fill bitmask + apply + accept)
  next to an unconstrained bf16 decode step of SmolLM2-135M;
* the same coverage and costs for llguidance when it is installed.

Prints a table and writes ``benchmarks/results/grammar.json``. :func:`evaluate` is also used
by ``tests/test_jsonschemabench.py``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import time
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
import torch
import xgrammar

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mcp_server.engines.embedded.decoding.constraints import (  # noqa: E402
    compile_response_format,
    validate_output,
)
from mcp_server.engines.embedded.decoding.grammar_cache import GrammarCache  # noqa: E402
from mcp_server.engines.embedded.model_files import load_model, load_tokenizer  # noqa: E402
from mcp_server.errors import InvalidRequest  # noqa: E402

DATA = ROOT / "tests" / "data" / "jsonschemabench"


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
    compile_ms: list[float] = field(default_factory=list)
    token_ms: list[float] = field(default_factory=list)
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


class XGrammarBackend:
    """The product's path: :func:`compile_response_format` and an ``xgrammar.GrammarMatcher``."""

    name = "xgrammar"

    def __init__(self, tokenizer):
        info = xgrammar.TokenizerInfo.from_huggingface(tokenizer, vocab_size=len(tokenizer))
        self.compiler = xgrammar.GrammarCompiler(info, max_threads=2)
        self.bitmask = xgrammar.allocate_token_bitmask(1, len(tokenizer))

    def compile(self, schema: Any) -> xgrammar.CompiledGrammar:
        """Compile, raising InvalidRequest for a rejected schema."""
        return compile_response_format(self.compiler, response_format(schema), GrammarCache())

    def matches(self, grammar: xgrammar.CompiledGrammar, token_ids: list[int], logits: torch.Tensor | None, times: list[float]) -> bool:
        """Feed tokens; True when all are accepted and the grammar may stop.

        With ``logits``, each step also fills the bitmask and applies it, and is timed.
        """
        matcher = xgrammar.GrammarMatcher(grammar)
        for token in token_ids:
            start = time.perf_counter()
            if logits is not None:
                matcher.fill_next_token_bitmask(self.bitmask)
                xgrammar.apply_token_bitmask_inplace(logits, self.bitmask)
            accepted = matcher.accept_token(token)
            if logits is not None:
                times.append((time.perf_counter() - start) * 1000)
            if not accepted:
                return False
        return matcher.is_completed()


class LLGuidanceBackend:
    """llguidance on the raw schema (its own keyword support), compact JSON like ours."""

    name = "llguidance"

    def __init__(self, tokenizer):
        import llguidance
        import llguidance.hf
        import llguidance.torch

        self.llg, self.torch = llguidance, llguidance.torch
        self.tokenizer = llguidance.hf.from_tokenizer(tokenizer)
        self.bitmask = llguidance.torch.allocate_token_bitmask(1, self.tokenizer.vocab_size)
        self.options = {"whitespace_flexible": False, "item_separator": ",", "key_separator": ":"}

    def compile(self, schema: Any) -> str:
        """Build and validate the grammar, raising InvalidRequest when llguidance refuses it."""
        grammar = self.llg.LLMatcher.grammar_from_json_schema(schema, defaults=self.options)
        is_error, messages = self.llg.LLMatcher.validate_grammar_with_warnings(grammar, self.tokenizer)
        if is_error:
            raise InvalidRequest("; ".join(messages)[:200])
        return grammar

    def matches(self, grammar: str, token_ids: list[int], logits: torch.Tensor | None, times: list[float]) -> bool:
        """As :meth:`XGrammarBackend.matches`; the matcher is created (compiled lazily) here."""
        matcher = self.llg.LLMatcher(self.tokenizer, grammar)
        for token in token_ids:
            start = time.perf_counter()
            if logits is not None:
                self.torch.fill_next_token_bitmask(matcher, self.bitmask)
                self.torch.apply_token_bitmask_inplace(logits, self.bitmask)
            accepted = matcher.consume_token(token)
            if logits is not None:
                times.append((time.perf_counter() - start) * 1000)
            if not accepted:
                return False
        return matcher.is_accepting()


def response_format(schema: Any) -> dict[str, Any]:
    """A ``json_schema`` response_format around ``schema``."""
    return {"type": "json_schema", "json_schema": {"name": "bench", "schema": schema}}


def evaluate(backend: Any, tokenizer, files: list[Path], timed: bool = False) -> dict[str, SourceStats]:
    """Run a backend over dataset files; stats per source plus ``ALL``.

    Compile time includes the first matcher (llguidance compiles lazily there).
    """
    stats: dict[str, SourceStats] = defaultdict(SourceStats)
    logits = torch.zeros(1, len(tokenizer)) if timed else None
    for path in files:
        case = json.loads(path.read_text())
        per = [stats[source_of(path)], stats["ALL"]]
        for s in per:
            s.schemas += 1
        start = time.perf_counter()
        try:
            grammar = backend.compile(case["schema"])
            backend.matches(grammar, [], None, [])
        except InvalidRequest as exc:
            for s in per:
                s.rejected += 1
                s.rejections[exc.message.split(" at ")[0].split(" is ")[0][:60]] += 1
            continue
        elapsed = (time.perf_counter() - start) * 1000
        validator = jsonschema.validators.validator_for(case["schema"])(case["schema"])
        outcome: Counter = Counter()
        times: list[float] = []
        for test in case["tests"]:
            text = json.dumps(grammar_order(test["data"], case["schema"], validator), separators=(",", ":"), ensure_ascii=False)
            accepted = backend.matches(grammar, tokenizer.encode(text, add_special_tokens=False), logits, times)
            if test["valid"]:
                outcome["valid"] += 1
                outcome["valid_accepted"] += accepted
            else:
                outcome["invalid"] += 1
                outcome["invalid_rejected_by_grammar"] += not accepted
                caught = accepted and validate_output(text, response_format(case["schema"])) is not None
                outcome["invalid_caught_by_final_check"] += caught
        for s in per:
            s.compiled += 1
            s.compile_ms.append(elapsed)
            s.token_ms.extend(times)
            for key, count in outcome.items():
                setattr(s, key, getattr(s, key) + count)
    return dict(stats)


def decode_step_ms(steps: int = 32) -> float:
    """Median unconstrained decode step (ms) of the bundled model, 1 sequence, loaded as the
    embedded engine loads it (:func:`mcp_server.engines.embedded.model_files.load_model`, dtype auto)."""
    model = load_model().model
    ids = torch.arange(100, 164).unsqueeze(0)
    durations = []
    with torch.inference_mode():
        out = model(input_ids=ids, use_cache=True)
        for _ in range(steps):
            token = out.logits[:, -1:].argmax(-1)
            start = time.perf_counter()
            out = model(input_ids=token, cache=out.past_key_values, use_cache=True)
            durations.append((time.perf_counter() - start) * 1000)
    return statistics.median(durations)


def percentile(values: list[float], q: float) -> float:
    """The q-quantile (0..1) of values, nearest rank; 0 for none."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


def summary(s: SourceStats) -> dict[str, Any]:
    """Shares, counts and time percentiles of one SourceStats."""
    share = lambda a, b: round(a / b, 3) if b else None  # noqa: E731
    row = {k: v for k, v in asdict(s).items() if k not in ("compile_ms", "token_ms", "rejections")}
    row.update(
        compiled_share=share(s.compiled, s.schemas),
        valid_accepted_share=share(s.valid_accepted, s.valid),
        invalid_rejected_share=share(s.invalid_rejected_by_grammar, s.invalid),
        compile_ms_p50=round(percentile(s.compile_ms, 0.5), 2),
        compile_ms_p99=round(percentile(s.compile_ms, 0.99), 2),
        token_ms_p50=round(percentile(s.token_ms, 0.5), 4),
        token_ms_mean=round(statistics.fmean(s.token_ms), 4) if s.token_ms else None,
        rejections=dict(s.rejections),
    )
    return row


def main() -> None:
    """Run the benchmark, print the table, write ``benchmarks/results/grammar.json``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-model", action="store_true", help="use a constant 24 ms for a decode step (bf16, 1 sequence)")
    parser.add_argument("--data", type=Path, default=DATA, help="folder of JSONSchemaBench-format files")
    parser.add_argument("--no-llguidance", action="store_true")
    args = parser.parse_args()
    tokenizer = load_tokenizer()
    files = sorted(args.data.glob("*.json"))
    backends = [XGrammarBackend(tokenizer)]
    if not args.no_llguidance and importlib.util.find_spec("llguidance"):
        backends.append(LLGuidanceBackend(tokenizer))
    results: dict[str, Any] = {"files": len(files), "backends": {}}
    for backend in backends:
        stats = evaluate(backend, tokenizer, files, timed=True)
        results["backends"][backend.name] = {source: summary(s) for source, s in sorted(stats.items())}
    step = 24.0 if args.no_model else decode_step_ms()
    results["decode_step_ms"] = {"value": round(step, 2), "source": "constant (24 ms, bf16 step measured on a 2-core CPU)" if args.no_model else "measured, transformers float32, 2 threads"}
    header = f"{'backend':10} {'source':16} {'schemas':>7} {'compiled':>8} {'valid ok':>9} {'invalid rej':>11} {'caught':>6} {'cmp p50':>8} {'cmp p99':>8} {'tok p50':>7} {'tok mean':>8} {'% step':>6}"
    print(header)
    for name, rows in results["backends"].items():
        for source, r in rows.items():
            token = r["token_ms_mean"] or 0.0
            print(f"{name:10} {source:16} {r['schemas']:7} {r['compiled_share']:8.1%} "
                  f"{r['valid_accepted']:4}/{r['valid']:<4} {r['invalid_rejected_by_grammar']:5}/{r['invalid']:<5} "
                  f"{r['invalid_caught_by_final_check']:6} {r['compile_ms_p50']:8.2f} {r['compile_ms_p99']:8.1f} "
                  f"{r['token_ms_p50']:7.4f} {token:8.4f} {token / step:6.2%}")  # fmt: skip
    print(f"decode step: {step:.2f} ms ({results['decode_step_ms']['source']})")
    out = ROOT / "benchmarks" / "results" / "grammar.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
