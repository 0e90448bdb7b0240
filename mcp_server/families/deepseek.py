"""``deepseekv3`` / ``deepseekv31``: DeepSeek V3 (and R1) and V3.1 tool calls (SGLang names).

V3 / R1: ``<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>NAME`` then the
arguments in a json code fence, ``<｜tool▁call▁end｜>``, more calls, ``<｜tool▁calls▁end｜>``.
V3.1: ``<｜tool▁call▁begin｜>NAME<｜tool▁sep｜>{...}<｜tool▁call▁end｜>``. One reader takes both.
A call opener also ends an unclosed think block (R1 prompts open it; the model may call
a tool without thinking).
"""

from __future__ import annotations

from mcp_server.families.base import Block, Call, CallTemplate, ToolSyntax, Tools
from mcp_server.families.jsoncalls import call_of, decode
from mcp_server.families.sections import scan_section

__all__ = ["DEEPSEEK_V3", "DEEPSEEK_V31"]

_MARKERS = ("<｜tool▁calls▁begin｜>", "<｜tool▁calls▁end｜>", "<｜tool▁call▁begin｜>", "<｜tool▁call▁end｜>")
_SEP = "<｜tool▁sep｜>"


def _read(body: str) -> Call | None:
    head, sep, tail = body.partition(_SEP)
    if not sep:
        return None
    if head.strip() == "function":  # V3: the type, then the name on the line before the fence
        name, _, tail = tail.partition("\n")
        tail = tail.strip()
        if tail.startswith("```"):
            tail = tail[3:].removeprefix("json")
            tail = tail[: tail.rfind("```")] if tail.rstrip().endswith("```") else tail
    else:
        name = head
    return call_of({"name": name.strip(), "arguments": decode(tail.strip())}) if name.strip() else None


def scan(text: str, final: bool, tools: Tools) -> Block | None:
    """One ``<｜tool▁calls▁begin｜>`` section."""
    return scan_section(text, final, _MARKERS, _read)


DEEPSEEK_V3 = ToolSyntax(
    "deepseekv3",
    (_MARKERS[0],),
    scan,
    ends_reasoning=True,
    template=CallTemplate(
        _MARKERS[0] + _MARKERS[2] + "function" + _SEP + "{name}\n```json\n", "\n```" + _MARKERS[3] + _MARKERS[1], _MARKERS[0], ""
    ),
)
DEEPSEEK_V31 = ToolSyntax(
    "deepseekv31",
    (_MARKERS[0],),
    scan,
    ends_reasoning=True,
    template=CallTemplate(_MARKERS[0] + _MARKERS[2] + "{name}" + _SEP, _MARKERS[3] + _MARKERS[1], _MARKERS[0], ""),
)
