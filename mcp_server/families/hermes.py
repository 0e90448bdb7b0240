"""``hermes``: ``<tool_call>\\n{"name": ..., "arguments": {...}}\\n</tool_call>`` (Hermes 2 Pro /
Hermes 3, Qwen 2.5, Qwen3; SGLang ``hermes`` / ``qwen25``)."""

from __future__ import annotations

from mcp_server.families.base import Block, CallTemplate, ToolSyntax, Tools, balanced_end
from mcp_server.families.jsoncalls import call_of, decode

__all__ = ["HERMES"]

_OPEN, _CLOSE = "<tool_call>", "</tool_call>"


def scan(text: str, final: bool, tools: Tools) -> Block | None:
    """One ``<tool_call>`` block; its body is one JSON object (or a list of them)."""
    start = len(text) - len(text[len(_OPEN) :].lstrip())
    if start == len(text):
        return None
    if text[start] == "{":
        # The object's own end, so that "</tool_call>" inside a JSON string is text.
        end = balanced_end(text, start)
        if end is None:
            return None  # at the end of the output: a cut call, dropped
        rest = text[end:].lstrip()
        close = len(text) - len(rest)
        if rest.startswith(_CLOSE):
            return _block(text[start:end], close + len(_CLOSE)) or Block((), close + len(_CLOSE))
        if _CLOSE.startswith(rest) and not final:
            return None
        if final and not rest:  # stopped right before </tool_call>
            return _block(text[start:end], end) or Block((), len(_OPEN))
        return Block((), len(_OPEN))  # not a call: the tag is text
    if text[start] != "[":
        return Block((), len(_OPEN))
    close = text.find(_CLOSE)
    if close < 0:
        return None
    return _block(text[len(_OPEN) : close], close + len(_CLOSE)) or Block((), close + len(_CLOSE))


def _block(body: str, end: int) -> Block | None:
    value = decode(body.strip())
    values = value if isinstance(value, list) else [value]
    calls = [call_of(v) for v in values]
    if not calls or any(c is None for c in calls):
        return None
    return Block(tuple(c for c in calls if c is not None), end)


HERMES = ToolSyntax(
    "hermes", (_OPEN,), scan, template=CallTemplate('<tool_call>\n{"name": {name_json}, "arguments": ', "}\n</tool_call>", _OPEN)
)
