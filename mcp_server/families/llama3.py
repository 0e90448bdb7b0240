"""``llama3``: Llama 3.1/3.2/3.3 JSON tool calls (SGLang ``llama3``).

``{"name": ..., "parameters": {...}}`` (Llama 3.1 model card, "JSON based tool calling"),
optionally after ``<|python_tag|>``, with ``arguments`` instead of ``parameters`` and with
Meta's documented ``"type": "function"`` key; several calls are separated by ``;``. A JSON
object that is not a call (``{"capital": "Paris"}``) stays content.
"""

from __future__ import annotations

from mcp_server.families.base import Block, Call, CallTemplate, ToolSyntax, Tools, balanced_end
from mcp_server.families.jsoncalls import call_of, decode

__all__ = ["LLAMA3"]

_TAG = "<|python_tag|>"


def scan(text: str, final: bool, tools: Tools) -> Block | None:
    """A call object (or ``;``-separated objects) at the start of ``text``."""
    tagged = text.startswith(_TAG)
    pos = last_end = len(_TAG) if tagged else 0
    calls: list[Call] = []

    def not_a_call(end: int) -> Block | None:
        # Text after the last call (or a plain object) is content; a bare tag is dropped.
        return Block(tuple(calls), last_end) if calls or tagged else Block((), end)

    while True:
        start = _skip(text, pos)
        key = _skip(text, start + 1)
        if key >= len(text):
            return (Block(tuple(calls), last_end) if calls else None) if final else None
        if text[start] != "{" or text[key] != '"':
            return not_a_call(1)
        end = balanced_end(text, start)
        if end is None:
            return None  # cut off inside the object: dropped at the end of the output
        call = call_of(decode(text[start:end]))
        if call is None:
            return not_a_call(end)
        calls.append(call)
        last_end = end
        after = _skip(text, end)
        if after == len(text) and not final:
            return None  # a ';' and another call may follow
        if after < len(text) and text[after] == ";":
            pos = after + 1
            continue
        return Block(tuple(calls), end)


def _skip(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in " \t\r\n":
        pos += 1
    return pos


LLAMA3 = ToolSyntax(
    "llama3", (_TAG, "{"), scan, template=CallTemplate('{"name": {name_json}, "parameters": ', "}", '{"name": ')
)
