"""Tool-call and reasoning parsing on the canitoolcall 0.1.1 corpus (469 recorded model outputs).

Every fixture's ``raw_output`` runs through the server's output path (the family table's
parser, final validation, OpenAI delta shaping: see ``toolcall_corpus.py``), whole and
streamed by characters (one per delta, and five seeded groupings of 1-8), judged by
canitoolcall's own checks. A fixture passes only if every split passes.

Beside it, the same fixtures, splits and checks through SGLang's own parsers
(``sglang_corpus.py``: its ``FunctionCallParser`` and ``ReasoningParser`` under the parser
names our table gives each model), when SGLang is importable here; otherwise that column
says why not and the rest still runs.

    .venv/bin/python benchmarks/bench_toolcalls.py   # prints the table, writes results/toolcalls.json

The last line is ``total: pass=P soft=S fail=F error=E unsupported=U`` (ours).
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

sys.path[:0] = [str(Path(__file__).resolve().parent.parent), str(Path(__file__).resolve().parent)]  # this checkout first

from sglang_corpus import replay_sglang, sglang_version  # noqa: E402
from toolcall_corpus import run_corpus  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "toolcalls.json"
COLUMNS = ("pass", "soft_pass", "fail", "error", "unsupported")
SHORT = {"pass": "pass", "soft_pass": "soft", "fail": "fail", "error": "err", "unsupported": "unsup"}

PUBLISHED = {
    # The corpus' published whole-corpus totals (token-level streams), from issue 16.
    "llama.cpp": "278 pass / 46 soft / 114 fail of 438 supported",
    "vLLM 0.30.0": "268 pass / 86 soft / 115 fail of 469",
    "SGLang 0.5.20": "189 pass / 62 soft / 197 fail of 448",
    "chatcap before this table": "50 pass / 13 soft / 11 fail of 74 supported (395 unsupported)",
}


def _total(result: dict[str, Any]) -> dict[str, int]:
    total = dict.fromkeys(COLUMNS, 0)
    for counts in result["families"].values():
        for column in COLUMNS:
            total[column] += counts.get(column, 0)
    return total


def _line(total: dict[str, int]) -> str:
    return " ".join(f"{'soft' if c == 'soft_pass' else c}={total[c]}" for c in COLUMNS)


def main() -> None:
    """Run the corpus through ours and SGLang's parsers, print both beside the published
    numbers, write the JSON results."""
    ours = run_corpus()
    logging.getLogger("sglang").setLevel(logging.CRITICAL)  # its parsers log every output they refuse
    version = sglang_version()
    sglang: dict[str, Any] = (
        {"version": version, **run_corpus(replay_sglang)}
        if version
        else {"unavailable": "sglang is not importable here (make installs it with --no-deps)"}
    )
    name = f"SGLang {version}" if version else "SGLang"
    print(f"{'':<14}{'chatcap':^30} | {name:^30}")
    cells = "".join(f"{SHORT[c]:>6}" for c in COLUMNS)
    print(f"{'family':<14}{cells} | {cells}")
    for family, counts in ours["families"].items():
        theirs = sglang.get("families", {}).get(family)
        right = "".join(f"{theirs.get(c, 0):>6}" for c in COLUMNS) if theirs else f"{'(not run)':>30}"
        print(f"{family:<14}" + "".join(f"{counts.get(c, 0):>6}" for c in COLUMNS) + " | " + right)
    total = _total(ours)
    if version:
        sglang["total"] = _total(sglang)
        won = sum(
            1 for case, mine in ours["cases"].items()
            if mine["status"] in ("pass", "soft_pass") and sglang["cases"][case]["status"] not in ("pass", "soft_pass")
        )
        lost = sum(
            1 for case, mine in ours["cases"].items()
            if mine["status"] not in ("pass", "soft_pass") and sglang["cases"][case]["status"] in ("pass", "soft_pass")
        )
        sglang["ours_only"], sglang["sglang_only"] = won, lost
        print(f"\nfixtures only chatcap passes: {won}; only SGLang {version} passes: {lost}")
    print("\npublished (canitoolcall matrix, whole corpus):")
    for engine, numbers in PUBLISHED.items():
        print(f"  {engine:<28} {numbers}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps({"total": total, **ours, "sglang": sglang}, indent=1, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    print(f"\nwrote {RESULTS.relative_to(Path.cwd()) if RESULTS.is_relative_to(Path.cwd()) else RESULTS}")
    print(f"sglang total: {_line(sglang['total'])}" if version else f"sglang: {sglang['unavailable']}")
    print(f"total: {_line(total)}")


if __name__ == "__main__":
    main()
