"""``kimi_k2``: Kimi K2 / K2.5 / K2.6 tool calls (SGLang ``kimi_k2``)::

    <|tool_calls_section_begin|><|tool_call_begin|>functions.get_weather:0
    <|tool_call_argument_begin|>{"city": "Paris"}<|tool_call_end|><|tool_calls_section_end|>

The name lives in the call id ``functions.NAME:INDEX``.
"""

from __future__ import annotations

from mcp_server.families.base import Block, Call, CallTemplate, ToolSyntax, Tools
from mcp_server.families.jsoncalls import call_of, decode
from mcp_server.families.sections import scan_section

__all__ = ["KIMI_K2"]

_MARKERS = ("<|tool_calls_section_begin|>", "<|tool_calls_section_end|>", "<|tool_call_begin|>", "<|tool_call_end|>")
_ARGUMENTS = "<|tool_call_argument_begin|>"


def _read(body: str) -> Call | None:
    call_id, sep, arguments = body.partition(_ARGUMENTS)
    name = call_id.strip().rpartition(":")[0] if ":" in call_id else call_id.strip()
    name = name.removeprefix("functions.")
    return call_of({"name": name, "arguments": decode(arguments.strip())}) if sep and name else None


def scan(text: str, final: bool, tools: Tools) -> Block | None:
    """One ``<|tool_calls_section_begin|>`` section."""
    return scan_section(text, final, _MARKERS, _read)


KIMI_K2 = ToolSyntax(
    "kimi_k2",
    (_MARKERS[0],),
    scan,
    ends_reasoning=True,
    template=CallTemplate(
        _MARKERS[0] + _MARKERS[2] + "functions.{name}:0" + _ARGUMENTS, _MARKERS[3] + _MARKERS[1], _MARKERS[0], ""
    ),
)
