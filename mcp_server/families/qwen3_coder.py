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

from mcp_server.families.arguments import ArgumentSyntax
from mcp_server.families.base import Block, Call, CallTemplate, Tools, ToolSyntax
from mcp_server.families.xmlargs import arguments_text

__all__ = ["QWEN3_CODER"]

_OPEN, _CLOSE, _FUNCTION, _FUNCTION_END = "<tool_call>", "</tool_call>", "<function=", "</function>"
_PARAMETER = re.compile(r"<parameter=([^>\n]*)>")
_VALUE_END = re.compile(r"</parameter>(?=\s*(?:<parameter=|</function>))|(?=\n(?:<parameter=|</function>))")


def scan(text: str, final: bool, tools: Tools) -> Block | None:
    """One ``<tool_call><function=...>...</function></tool_call>`` (or a bare ``<function=``)."""
    pos = len(_OPEN) if text.startswith(_OPEN) else 0
    while pos < len(text) and text[pos] in " \t\r\n":
        pos += 1
    if not text.startswith(_FUNCTION, pos):
        if _FUNCTION.startswith(text[pos:]):
            return None
        return Block((), len(_OPEN))
    read = _function(text, pos + len(_FUNCTION), tools)
    if read is None:
        return None
    call, end = read
    rest = text[end:].lstrip()
    if _CLOSE.startswith(rest) and rest != _CLOSE and not final:
        return None
    if rest.startswith(_CLOSE):
        end = text.index(_CLOSE, end) + len(_CLOSE)
    return Block((call,), end) if call else Block((), end)


def _function(text: str, pos: int, tools: Tools) -> tuple[Call | None, int] | None:
    """The call whose name starts at ``pos`` and the end of its ``</function>``; None while incomplete.

    A value ends at a ``</parameter>`` that the next parameter or ``</function>`` follows, or
    (a missing ``</parameter>``) at a line break they follow: marker text inside a value stays.
    """
    head = text.find(">", pos)
    if head < 0:
        return None
    name, pos = text[pos:head].strip(), head + 1
    pairs = []
    while True:
        while pos < len(text) and text[pos] in " \t\r\n":
            pos += 1
        if text.startswith(_FUNCTION_END, pos):
            return (Call(name, arguments_text(tools, name, pairs)) if name else None), pos + len(_FUNCTION_END)
        match = _PARAMETER.match(text, pos)
        if match is None:
            if pos >= len(text) or _FUNCTION_END.startswith(text[pos:]) or "<parameter=".startswith(text[pos : pos + 11]):
                return None
            return None, pos  # not the XML call syntax: the block is content
        stop = _VALUE_END.search(text, match.end())
        if stop is None:
            return None
        value = text[match.end() : stop.start()]
        value = value[1:] if value.startswith("\n") else value
        value = value[:-1] if value.endswith("\n") else value
        pairs.append((match.group(1).strip(), value, None))
        pos = stop.end()


QWEN3_CODER = ToolSyntax(
    "qwen3_coder",
    (_OPEN, _FUNCTION),
    scan,
    ends_reasoning=True,
    template=CallTemplate(
        _OPEN + "\n" + _FUNCTION + "{name}>\n",
        _FUNCTION_END + "\n" + _CLOSE,
        _OPEN,
        arguments=ArgumentSyntax(
            "tagged", "<parameter={key}>\n", "\n</parameter>\n", forbidden=("</parameter>", "\n<parameter=", "\n</function>")
        ),
    ),
)
"""Written as Qwen3-Coder's chat template writes calls (one ``<tool_call>`` per call)."""
