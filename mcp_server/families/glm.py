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

from mcp_server.families.base import Block, Call, Tools, ToolSyntax
from mcp_server.families.xmlargs import arguments_text

__all__ = ["GLM45", "GLM47"]

_OPEN, _CLOSE = "<tool_call>", "</tool_call>"
_PAIR = re.compile(r"<arg_key>(.*?)</arg_key>\s*<arg_value>(.*?)(?:</arg_value>|$)", re.DOTALL)


def scan(text: str, final: bool, tools: Tools) -> Block | None:
    """One ``<tool_call>`` block."""
    close = text.find(_CLOSE)
    if close < 0:
        return None
    body = text[len(_OPEN) : close]
    name, sep, rest = body.partition("<")
    name = name.strip()
    if not name or any(c in name for c in '{}"\n'):
        return Block((), close + len(_CLOSE))
    rest = sep + rest
    pairs = [(key.strip(), value, None) for key, value in _PAIR.findall(rest)]
    return Block((Call(name, arguments_text(tools, name, pairs)),), close + len(_CLOSE))


GLM45 = ToolSyntax("glm45", (_OPEN,), scan)
GLM47 = ToolSyntax("glm47", (_OPEN,), scan)
