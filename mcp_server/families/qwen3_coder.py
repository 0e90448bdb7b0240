"""``qwen3_coder``: Qwen3-Coder / Qwen3.5+ XML calls (SGLang ``qwen3_coder``)::

    <tool_call>
    <function=get_weather>
    <parameter=city>
    Paris
    </parameter>
    </function>
    </tool_call>

Values are raw text (one newline after the opening and before the closing tag is layout);
a value is read as JSON unless the tool's schema says ``string``. Seen in the wild and
accepted: a missing ``<tool_call>`` opener, a missing ``</parameter>``.
"""

from __future__ import annotations

import re

from mcp_server.families.base import Block, Call, Tools, ToolSyntax
from mcp_server.families.xmlargs import arguments_text

__all__ = ["QWEN3_CODER"]

_OPEN, _CLOSE, _FUNCTION, _FUNCTION_END = "<tool_call>", "</tool_call>", "<function=", "</function>"
_PARAMETER = re.compile(r"<parameter=([^>\n]*)>")


def scan(text: str, final: bool, tools: Tools) -> Block | None:
    """One ``<tool_call><function=...>...</function></tool_call>`` (or a bare ``<function=``)."""
    pos = len(_OPEN) if text.startswith(_OPEN) else 0
    while pos < len(text) and text[pos] in " \t\r\n":
        pos += 1
    if not text.startswith(_FUNCTION, pos):
        if _FUNCTION.startswith(text[pos:]):
            return None
        return Block((), len(_OPEN))
    close = text.find(_FUNCTION_END, pos)
    if close < 0:
        return None
    call = _function(text[pos + len(_FUNCTION) : close], tools)
    end = close + len(_FUNCTION_END)
    rest = text[end:].lstrip()
    if _CLOSE.startswith(rest) and rest != _CLOSE and not final:
        return None
    if rest.startswith(_CLOSE):
        end = text.index(_CLOSE, end) + len(_CLOSE)
    return Block((call,), end) if call else Block((), end)


def _function(body: str, tools: Tools) -> Call | None:
    name, sep, rest = body.partition(">")
    if not sep or not name.strip():
        return None
    name = name.strip()
    pairs = []
    starts = list(_PARAMETER.finditer(rest))
    for index, match in enumerate(starts):
        stop = starts[index + 1].start() if index + 1 < len(starts) else len(rest)
        value = rest[match.end() : stop]
        closing = value.rfind("</parameter>")
        if closing >= 0:
            value = value[:closing]
        value = value[1:] if value.startswith("\n") else value
        value = value[:-1] if value.endswith("\n") else value
        pairs.append((match.group(1).strip(), value, None))
    return Call(name, arguments_text(tools, name, pairs))


QWEN3_CODER = ToolSyntax("qwen3_coder", (_OPEN, _FUNCTION), scan, ends_reasoning=True)
