"""Tool-call and reasoning parsing on the canitoolcall 0.1.1 corpus (469 recorded model outputs).

Every fixture's ``raw_output`` runs through the server's output path (the family table's
parser, final validation, OpenAI delta shaping: see ``toolcall_corpus.py``), whole and
streamed by characters (one per delta, and five seeded groupings of 1-8), judged by
canitoolcall's own checks. A fixture passes only if every split passes.

    .venv/bin/python benchmarks/bench_toolcalls.py   # prints the table, writes results/toolcalls.json

The last line is ``total: pass=P soft=S fail=F error=E unsupported=U``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parent.parent), str(Path(__file__).resolve().parent)]  # this checkout first

from toolcall_corpus import run_corpus  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "toolcalls.json"
COLUMNS = ("pass", "soft_pass", "fail", "error", "unsupported")

PUBLISHED = {
    # The corpus' published whole-corpus totals (token-level streams), from issue 16.
    "llama.cpp": "278 pass / 46 soft / 114 fail of 438 supported",
    "vLLM 0.30.0": "268 pass / 86 soft / 115 fail of 469",
    "SGLang 0.5.20": "189 pass / 62 soft / 197 fail of 448",
    "chatcap before this table": "50 pass / 13 soft / 11 fail of 74 supported (395 unsupported)",
}


def main() -> None:
    """Run the corpus, print the table and the published numbers, write the JSON results."""
    result = run_corpus()
    print(f"{'family':<14}" + "".join(f"{c:>12}" for c in COLUMNS))
    total = dict.fromkeys(COLUMNS, 0)
    for family, counts in result["families"].items():
        print(f"{family:<14}" + "".join(f"{counts.get(c, 0):>12}" for c in COLUMNS))
        for column in COLUMNS:
            total[column] += counts.get(column, 0)
    print("\npublished (canitoolcall matrix, whole corpus):")
    for engine, numbers in PUBLISHED.items():
        print(f"  {engine:<28} {numbers}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"total": total, **result}, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"\nwrote {RESULTS.relative_to(Path.cwd()) if RESULTS.is_relative_to(Path.cwd()) else RESULTS}")
    print(
        f"total: pass={total['pass']} soft={total['soft_pass']} fail={total['fail']} "
        f"error={total['error']} unsupported={total['unsupported']}"
    )


if __name__ == "__main__":
    main()
