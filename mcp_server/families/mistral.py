"""``mistral``: Mistral's ``[TOOL_CALLS]`` control token (SGLang ``mistral``).

Two syntaxes, by tokenizer version: v3 (Mistral 7B v0.3) writes one JSON array,
``[TOOL_CALLS] [{"name": ..., "arguments": {...}}, ...]``; v11+ (Mistral Small 3.2,
Devstral, Magistral, Ministral 3) write ``[TOOL_CALLS]name[ARGS]{...}`` per call, with an
optional ``[CALL_ID]id`` before ``[ARGS]``. Reasoning models think in ``[THINK]...[/THINK]``.
"""

from __future__ import annotations

import re

from mcp_server.families.base import Block, CallTemplate, ToolSyntax, Tools, balanced_end, held_back
from mcp_server.families.jsoncalls import call_of, decode

__all__ = ["MISTRAL"]

_OPEN, _ARGS, _CALL_ID = "[TOOL_CALLS]", "[ARGS]", "[CALL_ID]"
_HEADER = re.compile(r"[\w.\-]*(\[CALL_ID\][\w\-]*)?")
"""What comes between ``[TOOL_CALLS]`` and ``[ARGS]``: a name, maybe ``[CALL_ID]id``."""


def scan(text: str, final: bool, tools: Tools) -> Block | None:
    """One ``[TOOL_CALLS]`` block: a v3 JSON array, or one v11 ``name[ARGS]{...}`` call."""
    pos = len(_OPEN)
    body = text[pos:].lstrip()
    if not body:
        return None
    start = len(text) - len(body)
    if body.startswith("["):
        end = balanced_end(text, start)
        if end is None:
            return None
        value = decode(text[start:end])
        calls = [call_of(v) for v in value] if isinstance(value, list) else [None]
        if not calls or None in calls:
            return Block((), end)
        return Block(tuple(c for c in calls if c is not None), end)
    args = text.find(_ARGS, pos)
    if args < 0:
        header = text[pos:]
        header = header[: len(header) - held_back(header, (_ARGS, _CALL_ID))]
        return None if _HEADER.fullmatch(header) else Block((), pos)  # not a call: content
    name = text[pos:args].split(_CALL_ID)[0].strip()
    start = args + len(_ARGS)
    while start < len(text) and text[start] in " \t\r\n":
        start += 1
    if start == len(text):
        return None
    end = balanced_end(text, start)
    if end is None:
        return None
    call = call_of({"name": name, "arguments": decode(text[start:end])})
    return Block((call,), end) if call and name else Block((), end)


MISTRAL = ToolSyntax("mistral", (_OPEN,), scan, template=CallTemplate(_OPEN + "{name}" + _ARGS, "", _OPEN, ""))
