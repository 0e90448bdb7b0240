"""canitoolcall's own live probe (the package of the corpus, 0.1.1) against ``chatcap serve``
with the bundled model: every scenario, non-streamed and streamed, through the official
wire protocol. No protocol failure is allowed: no request error, no malformed stream, no
marker leak, no invalid call arguments, and streamed answers of the same shape as
non-streamed ones. Only the tiny model's choices (whether it calls a tool at all) may fail.

The probe sends no ``max_tokens``; SmolLM2-135M then writes until its context is full (7.5 min
for the whole probe on 2 busy cores), so each scenario here asks for at most 48 tokens.
README "Model families" has the table of a full run with the ``canitoolcall probe`` command.
"""

from __future__ import annotations

import dataclasses

from canitoolcall.probe import BUILTIN_SCENARIOS, probe

MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"

MODEL_CHOICES = (
    # canitoolcall's judgements of what the model chose to write (probe.evaluate_with_warnings);
    # every other problem is the server's.
    "expected at least ",
    "expected calls ",
    "expected no tool call",
    "expected a content answer",
    "expected no content",
    "expected reasoning_content",
    "expected no reasoning_content",
    "hint: ",
)


def _protocol_problems(detail: str | None) -> list[str]:
    return [p for p in (detail or "").split("; ") if not p.startswith(MODEL_CHOICES)]


def test_probe_finds_no_protocol_failure(server):
    scenarios = [dataclasses.replace(s, extra_body={**s.extra_body, "max_tokens": 48}) for s in BUILTIN_SCENARIOS]
    report = probe(f"{server.base_url}/v1", MODEL, api_key=server.api_key, scenarios=scenarios, timeout_s=300, concurrency=1)
    assert len(report.outcomes) == 3 * len(BUILTIN_SCENARIOS)
    bad = [
        (o.scenario_id, o.check, o.stream, o.status, o.detail)
        for o in report.outcomes
        if o.status not in ("pass", "fail") or (o.status == "fail" and (o.detail is None or _protocol_problems(o.detail)))
    ]
    assert not bad, report.render_text()
    # The forced call is constrained to the tool's schema: the model cannot choose otherwise.
    forced = [o for o in report.outcomes if o.scenario_id == "forced-tool-choice" and o.check == "scenario"]
    assert [o.status for o in forced] == ["pass", "pass"], report.render_text()
