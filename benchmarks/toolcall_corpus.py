"""Replaying the canitoolcall corpus through the server's own output path (shared by
``benchmarks/bench_toolcalls.py`` and ``tests/test_toolcall_corpus.py``).

Each fixture's ``raw_output`` goes through :class:`~mcp_server.engines.embedded.decoding.output.OutputProcessor`
(the family table's splitter, the final validation, the finish reason) and
:func:`~mcp_server.protocol.chunks.delta_payload` (OpenAI delta shaping), once whole and
streamed by characters: one character per delta and five seeded random groupings of 1 to 8
characters. canitoolcall's own checks judge the result.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Callable
from typing import Any

from canitoolcall.checks import case_status, run_checks
from canitoolcall.fixtures import Family as CorpusFamily
from canitoolcall.fixtures import Fixture, load_fixtures
from canitoolcall.results import Observation, ParseResult, StreamAccumulator

from mcp_server.engines.base import GenerationDelta, GenerationRequest
from mcp_server.engines.embedded.decoding.output import OutputProcessor
from mcp_server.errors import ServiceError
from mcp_server.protocol.chunks import delta_payload

__all__ = ["MODEL_FORMATS", "STRATEGIES", "Replay", "formats_of", "replay", "run_corpus"]

MODEL_FORMATS: dict[str, tuple[str | None, str | None]] = {
    # fixture models[0] prefix -> (--tool-call-parser, --reasoning-parser), SGLang names
    "deepseek-ai/DeepSeek-V3-0324": ("deepseekv3", "deepseek-r1"),
    "deepseek-ai/DeepSeek-V3.1": ("deepseekv31", "deepseek-v3"),
    "deepseek-ai/DeepSeek-V3.2": ("deepseekv32", "deepseek-v3"),
    "deepseek-ai/DeepSeek-V4.1": ("deepseekv41", "deepseek-v3"),
    "deepseek-ai/DeepSeek-V4": ("deepseekv4", "deepseek-v3"),
    "google/gemma-4": ("gemma4", "gemma4"),
    "zai-org/GLM-4.5": ("glm45", "glm45"),
    "zai-org/GLM-4.7": ("glm47", "glm45"),
    "zai-org/GLM-5": ("glm47", "glm45"),
    "openai/gpt-oss": ("gpt-oss", "gpt-oss"),
    "moonshotai/Kimi-K2": ("kimi_k2", "kimi"),
    "moonshotai/Kimi-K3": ("kimi_k3", "kimi_k3"),
    "meta-llama/Llama-3": ("llama3", None),
    "meta-llama/Llama-4": ("pythonic", None),
    "mistralai/Magistral-Small-2506": ("mistral", "qwen3"),  # thinks in plain-text <think>
    "mistralai/": ("mistral", "mistral"),
    "Qwen/Qwen3-Coder": ("qwen3_coder", "qwen3"),
    "Qwen/Qwen3.": ("qwen3_coder", "qwen3"),
    "Qwen/Qwen3-": ("hermes", "qwen3"),
}
"""The formats a server would detect for each model of the corpus."""

STRATEGIES = ("char:0", *(f"char:{seed}" for seed in range(1, 6)))
"""Stream splits: one character per delta (seed 0), five seeded groupings of 1-8 characters."""


def formats_of(fixture: Fixture) -> tuple[str | None, str | None]:
    """``(tool_call_parser, reasoning_parser)`` for a fixture's reference model."""
    model = fixture.models[0]
    for prefix, formats in MODEL_FORMATS.items():
        if model.startswith(prefix):
            return formats
    raise KeyError(model)


def _groups(text: str, strategy: str) -> list[str]:
    seed = int(strategy.split(":")[1])
    if seed == 0:
        return list(text)
    rng, pieces, pos = random.Random(seed), [], 0
    while pos < len(text):
        size = rng.randint(1, 8)
        pieces.append(text[pos : pos + size])
        pos += size
    return pieces


def replay(fixture: Fixture, prompt: str, pieces: list[str], formats: tuple[str | None, str | None]) -> ParseResult:
    """Run ``pieces`` (the output, split) through the server's output path; the parse a client sees."""
    request = GenerationRequest(model="m", messages=[], tools=list(fixture.tools) or None, tool_choice="auto")
    output = OutputProcessor(request, formats[0], formats[1], prompt=prompt)
    accumulator = StreamAccumulator()
    pieces = pieces or [""]
    try:
        for index, piece in enumerate(pieces):
            last = index == len(pieces) - 1
            delta = output.process(GenerationDelta(piece, 0, index + 1, ("stop" if not fixture.truncated else "length") if last else None))
            accumulator.add_openai_delta(delta_payload(delta))
    except ServiceError as error:  # the final validation refused the output
        return accumulator.result(exception=f"ServiceError: {error}")
    return accumulator.result()


def _prompt(fixture: Fixture, family: CorpusFamily | None) -> str:
    if fixture.generation_prompt is not None:
        return fixture.generation_prompt
    for model in family.reference_models if family else ():
        if model.repo == fixture.models[0]:
            return model.default_generation_prompt or ""
    return ""


Replay = Callable[[Fixture, str, list[str], tuple[str | None, str | None]], ParseResult]
"""``(fixture, generation prompt, output pieces, (tool_call_parser, reasoning_parser)) -> parse``;
raises ValueError saying ``unknown`` for a format it does not have."""


def run_corpus(replay: Replay = replay, families: set[str] | None = None) -> dict[str, Any]:
    """Replay every fixture (of ``families``, default all) through ``replay`` (default: ours);
    return per-family counts and per-fixture statuses and details."""
    fixtures = [f for f in load_fixtures() if families is None or f.family in families]
    families: dict[str, CorpusFamily | None] = {}
    counts: dict[str, Counter[str]] = {}
    cases: dict[str, dict[str, Any]] = {}
    for fixture in fixtures:
        if fixture.family not in families:
            families[fixture.family] = _family(fixture)
        family = families[fixture.family]
        tally = counts.setdefault(fixture.family, Counter())
        formats = formats_of(fixture)
        prompt = _prompt(fixture, family)
        try:
            nonstream = replay(fixture, prompt, [fixture.raw_output], formats)
            streams = {s: replay(fixture, prompt, _groups(fixture.raw_output, s), formats) for s in STRATEGIES}
        except ValueError as error:  # an unknown format: not supported
            if "unknown" not in str(error):
                raise
            tally["unsupported"] += 1
            cases[fixture.id] = {"status": "unsupported"}
            continue
        except Exception as error:  # noqa: BLE001 - a crash is an "error" row, reported
            tally["error"] += 1
            cases[fixture.id] = {"status": "error", "detail": repr(error)}
            continue
        rows = run_checks(fixture, family, Observation(nonstream=nonstream, streams=streams))
        status = case_status(rows).value
        # char:* splits never count in canitoolcall's own status: we hold them to the same bar.
        worst = [r for r in rows if r.status.value not in ("pass",)]
        if any(r.status.value == "fail" for r in rows):
            status = "fail"
        elif any(r.status.value == "soft_pass" for r in rows) and status == "pass":
            status = "soft_pass"
        tally[status] += 1
        cases[fixture.id] = {
            "status": status,
            "failed_checks": sorted({r.check for r in worst if r.status.value == "fail"}),
            "detail": [f"{r.check}[{r.strategy}]: {r.detail}" for r in worst][:4],
        }
    return {"families": {k: dict(v) for k, v in sorted(counts.items())}, "cases": cases}


def _family(fixture: Fixture) -> CorpusFamily | None:
    if fixture.source is None:
        return None
    path = fixture.source.parent / "family.json"
    return CorpusFamily.from_dict(json.loads(path.read_text(encoding="utf-8"))) if path.exists() else None
