"""``gemma4``: Gemma 4 tool calls (SGLang ``gemma4``)::

    <|tool_call>call:get_weather{city:<|"|>Paris<|"|>,days:3}<tool_call|>

The arguments are an object notation: bare keys, strings between ``<|"|>`` delimiters
(anything inside, markers included), numbers, ``true``/``false``/``null``, objects, arrays.
"""

from __future__ import annotations

import json
import re
from typing import Any

from mcp_server.families.arguments import ArgumentSyntax
from mcp_server.families.base import Block, Call, CallTemplate, Tools, ToolSyntax

__all__ = ["GEMMA4"]

_OPEN, _CLOSE, _QUOTE = "<|tool_call>", "<tool_call|>", '<|"|>'
_HEAD = re.compile(r"call:([^{<\s]+)\{")
_SCALAR = re.compile(r"[^,}\]]*")


class _Incomplete(Exception):
    """The text ends inside the value."""


def scan(text: str, final: bool, tools: Tools) -> Block | None:
    """One ``<|tool_call>call:NAME{...}<tool_call|>`` block."""
    head = _HEAD.match(text, len(_OPEN))
    if head is None:
        close = text.find(_CLOSE)
        if close < 0:
            return None
        return Block((), close + len(_CLOSE))
    try:
        arguments, pos = _object(text, head.end())
    except _Incomplete:
        return None
    except ValueError:
        close = text.find(_CLOSE)
        return None if close < 0 else Block((), close + len(_CLOSE))
    if not text.startswith(_CLOSE, pos):
        if _CLOSE.startswith(text[pos:]) and not final:
            return None
        return Block((Call(head.group(1), json.dumps(arguments, ensure_ascii=False)),), pos)
    return Block((Call(head.group(1), json.dumps(arguments, ensure_ascii=False)),), pos + len(_CLOSE))


def _object(text: str, pos: int) -> tuple[dict[str, Any], int]:
    """Read an object whose ``{`` ends right before ``pos``; return it and the position after ``}``."""
    result: dict[str, Any] = {}
    while True:
        while pos < len(text) and text[pos] in " \n":
            pos += 1
        if pos >= len(text):
            raise _Incomplete
        if text[pos] == "}":
            return result, pos + 1
        colon = text.find(":", pos)
        if colon < 0:
            raise _Incomplete
        key = text[pos:colon].strip()
        if key.startswith(_QUOTE):
            key = key.removeprefix(_QUOTE).removesuffix(_QUOTE)
        result[key], pos = _value(text, colon + 1)
        pos = _separator(text, pos, "}")


def _separator(text: str, pos: int, closer: str) -> int:
    while pos < len(text) and text[pos] in " \n":
        pos += 1
    if pos >= len(text):
        raise _Incomplete
    if text[pos] == ",":
        return pos + 1
    if text[pos] == closer:
        return pos
    raise ValueError(f"unexpected {text[pos]!r}")


def _value(text: str, pos: int) -> tuple[Any, int]:
    while pos < len(text) and text[pos] in " \n":
        pos += 1
    if pos >= len(text):
        raise _Incomplete
    if text.startswith(_QUOTE, pos):
        end = text.find(_QUOTE, pos + len(_QUOTE))
        if end < 0:
            raise _Incomplete
        return text[pos + len(_QUOTE) : end], end + len(_QUOTE)
    if _QUOTE.startswith(text[pos:]):
        raise _Incomplete
    if text[pos] == "{":
        return _object(text, pos + 1)
    if text[pos] == "[":
        items: list[Any] = []
        pos += 1
        while True:
            while pos < len(text) and text[pos] in " \n":
                pos += 1
            if pos >= len(text):
                raise _Incomplete
            if text[pos] == "]":
                return items, pos + 1
            item, pos = _value(text, pos)
            items.append(item)
            pos = _separator(text, pos, "]")
    scalar = _SCALAR.match(text, pos)
    assert scalar is not None
    if scalar.end() == len(text):
        raise _Incomplete
    return json.loads(scalar.group().strip()), scalar.end()


GEMMA4 = ToolSyntax(
    "gemma4",
    (_OPEN,),
    scan,
    template=CallTemplate(_OPEN + "call:{name}", _CLOSE, _OPEN, "", arguments=ArgumentSyntax("gemma", xgrammar_style="gemma")),
)
