"""``glm45`` / ``glm47``: GLM-4.5/4.6 and GLM-4.7/5.x tool calls (SGLang names)::

    <tool_call>get_weather
    <arg_key>city</arg_key>
    <arg_value>Paris</arg_value>
    </tool_call>

GLM-4.7+ write the same without newlines. Values are raw text, read as JSON unless the
tool's schema says ``string`` (whitespace inside a value is kept). A missing last
``</arg_value>`` is accepted.
"""

from __future__ import annotations

import re

from mcp_server.families.arguments import ArgumentSyntax
from mcp_server.families.base import Block, Call, CallTemplate, Tools, ToolSyntax
from mcp_server.families.xmlargs import arguments_text

__all__ = ["GLM45", "GLM47"]

_OPEN, _CLOSE = "<tool_call>", "</tool_call>"
_KEY = re.compile(r"<arg_key>(.*?)</arg_key>\s*<arg_value>", re.DOTALL)
_VALUE_END = re.compile(r"</arg_value>(?=\s*(?:<arg_key>|</tool_call>))")
"""A value ends at an ``</arg_value>`` that the next key or ``</tool_call>`` follows (at the
end of the output, with ``</arg_value>`` missing, at the last ``</tool_call>``)."""


def scan(text: str, final: bool, tools: Tools) -> Block | None:
    """One ``<tool_call>`` block, read pair by pair so that marker text inside a value stays text."""
    head = re.compile(r"[^<\n]*").match(text, len(_OPEN))
    assert head is not None
    name, pos = head.group().strip(), head.end()
    pairs = []
    while True:
        while pos < len(text) and text[pos] in " \t\r\n":
            pos += 1
        if text.startswith(_CLOSE, pos):
            end = pos + len(_CLOSE)
            if not name or any(c in name for c in '{}"'):
                return Block((), end)
            return Block((Call(name, arguments_text(tools, name, pairs)),), end)
        key = _KEY.match(text, pos)
        if key is None:
            rest = text[pos:]
            if not final and any(m.startswith(rest) for m in (_CLOSE, "<arg_key>")) or "</arg_value>" not in rest and not final:
                return None
            close = text.find(_CLOSE, pos)
            return None if close < 0 else Block((), close + len(_CLOSE))
        stop = _VALUE_END.search(text, key.end())
        if stop is None:
            last = text.rfind(_CLOSE, key.end())
            if not final or last < 0:
                return None
            pairs.append((key.group(1).strip(), text[key.end() : last], None))
            pos = last
            continue
        pairs.append((key.group(1).strip(), text[key.end() : stop.start()], None))
        pos = stop.end()


GLM45 = ToolSyntax(
    "glm45",
    (_OPEN,),
    scan,
    template=CallTemplate(
        _OPEN + "{name}\n", _CLOSE, _OPEN,
        arguments=ArgumentSyntax("tagged", "<arg_key>{key}</arg_key>\n<arg_value>", "</arg_value>\n", forbidden=("</arg_value>",)),
    ),
)
GLM47 = ToolSyntax(
    "glm47",
    (_OPEN,),
    scan,
    template=CallTemplate(
        _OPEN + "{name}", _CLOSE, _OPEN, "",
        arguments=ArgumentSyntax("tagged", "<arg_key>{key}</arg_key><arg_value>", "</arg_value>", forbidden=("</arg_value>",)),
    ),
)
"""Written as the GLM-4.5 and GLM-4.7 chat templates write calls (4.7: no newlines)."""
