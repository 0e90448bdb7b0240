"""Split model output into content and tool calls, incrementally or at once.

One state machine serves both modes: :func:`parse` feeds the whole text to a
:class:`StreamParser`, so streamed argument pieces always concatenate to exactly the
non-streamed ``arguments`` string (a raw slice of the output, never re-serialized).

Recognised calls: the family's ``prefix`` marker (or ``{`` when it has none), then
``{"name": "<str>", "<arguments_key>": {...}}`` with any whitespace between tokens, then the
``suffix`` marker. Text that turns out not to be a call is returned as content. Whitespace
next to a call is dropped, so content is None when the model only called tools.

A call is reported whole, once its arguments object is complete: :class:`CallStart` and one
:class:`ArgumentsDelta` holding all of its arguments. A call cut off by the end of the output
is not reported at all, and when ``max_tokens`` cut it (``finish(truncated=True)``) its markup
never reaches content either, which keeps only the text before it (the truncation policy,
README "Structured output and tool calls").
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from mcp_server.engines.embedded.decoding.markers import held_back
from mcp_server.engines.embedded.decoding.toolcalls.format import ToolCallFormat

__all__ = ["ArgumentsDelta", "CallStart", "Event", "StreamParser", "TextDelta", "parse"]

_WS, _STR = object(), object()
_JSON_STRING = re.compile(r'"(?:[^"\\\x00-\x1f]|\\.)*"')
_JSON_STRING_START = re.compile(r'"(?:[^"\\\x00-\x1f]|\\.)*\\?')


@dataclass(frozen=True)
class TextDelta:
    """A piece of content text."""

    text: str


@dataclass(frozen=True)
class CallStart:
    """A tool call begins; ``index`` counts calls from 0 in output order."""

    index: int
    name: str


@dataclass(frozen=True)
class ArgumentsDelta:
    """A piece of the arguments JSON text of call ``index``."""

    index: int
    text: str


Event = TextDelta | CallStart | ArgumentsDelta


class StreamParser:
    """Incremental parser for one sequence of one family.

    Example::

        parser = StreamParser(FAMILIES["hermes"])
        events = parser.feed('<tool_call>\\n{"name": "f", "arguments": {"a":')
        events += parser.feed("1}}\\n</tool_call>") + parser.finish()
    """

    def __init__(self, fmt: ToolCallFormat):
        self._open = fmt.prefix.strip() or "{"
        tail = [_WS, '"name"', _WS, ":", _WS, _STR, _WS, ",", _WS, f'"{fmt.arguments_key}"', _WS, ":", _WS, "{"]
        self._header = [_WS, "{", *tail] if fmt.prefix.strip() else tail
        self._close = [_WS, "}"] + ([_WS, fmt.suffix.strip()] if fmt.suffix.strip() else [])
        self._state = "text"
        self._buf = ""
        self._held = ""
        self._calls = 0
        self._name = ""
        self._arguments = ""
        self._after_call = False
        self._depth = 0
        self._in_string = False
        self._escaped = False

    def feed(self, delta: str) -> list[Event]:
        """Consume the next piece of output; return the events it completes."""
        self._buf += delta
        events: list[Event] = []
        while getattr(self, f"_step_{self._state}")(events):
            pass
        return events

    def finish(self, truncated: bool = False) -> list[Event]:
        """End of output: flush held text. A call whose arguments were cut off is dropped.

        Args:
            truncated: the output was cut (``max_tokens``), not ended by the model: then text
                that may be the start of a call (``<tool``, a marker and part of a header) is
                dropped too; otherwise it is content (it may be text that only looks so).
        """
        events: list[Event] = []
        if self._state == "header" and not truncated:
            self._text(self._held + self._open + self._buf, events)
        elif self._state == "text":
            keep = len(self._buf) - held_back(self._buf, [self._open]) if truncated else len(self._buf)
            self._text(self._buf[:keep].rstrip(), events)
        self._buf, self._state, self._arguments = "", "text", ""
        return events

    def _step_text(self, events: list[Event]) -> bool:
        found = self._buf.find(self._open)
        if found >= 0:
            before = self._buf[:found]
            self._text(before.rstrip(), events)
            self._held = before[len(before.rstrip()) :]
            self._buf, self._state = self._buf[found + len(self._open) :], "header"
            return True
        keep = held_back(self._buf, [self._open])
        emit = self._buf[: len(self._buf) - keep].rstrip()
        self._text(emit, events)
        self._buf = self._buf[len(emit) :]
        return False

    def _step_header(self, events: list[Event]) -> bool:
        status, name, end = _scan(self._buf, self._header)
        if status == "partial":
            return False
        if status == "fail":
            self._text(self._held + self._open, events)
            self._state = "text"
            return True
        self._name, self._arguments = name, ""
        self._buf, self._state = self._buf[end - 1 :], "arguments"
        self._depth, self._in_string, self._escaped = 0, False, False
        return True

    def _step_arguments(self, events: list[Event]) -> bool:
        end = None
        for pos, char in enumerate(self._buf):
            if self._in_string:
                self._escaped, self._in_string = (False, True) if self._escaped else (char == "\\", char != '"')
            elif char == '"':
                self._in_string = True
            elif char in "{[":
                self._depth += 1
            elif char in "}]":
                self._depth -= 1
                if self._depth == 0:
                    end = pos + 1
                    break
        piece, self._buf = (self._buf, "") if end is None else (self._buf[:end], self._buf[end:])
        self._arguments += piece
        if end is not None:
            events += [CallStart(self._calls, self._name), ArgumentsDelta(self._calls, self._arguments)]
            self._calls += 1
            self._state, self._arguments = "close", ""
        return end is not None

    def _step_close(self, events: list[Event]) -> bool:
        status, _, end = _scan(self._buf, self._close)
        if status == "partial":
            return False
        if status == "match":
            self._buf = self._buf[end:]
        self._state, self._after_call = "text", True
        return True

    def _text(self, text: str, events: list[Event]) -> None:
        if self._after_call:
            text = text.lstrip()
            self._after_call = not text
        if text:
            events.append(TextDelta(text))


def parse(fmt: ToolCallFormat, text: str, truncated: bool = False) -> tuple[str | None, list[dict[str, str]]]:
    """Parse a whole output (``truncated``: as :meth:`StreamParser.finish`).

    Returns:
        ``(content, calls)``: content is None when empty; each call is
        ``{"name": str, "arguments": str}`` (JSON text as generated).
    """
    parser = StreamParser(fmt)
    content, calls = "", []
    for event in parser.feed(text) + parser.finish(truncated):
        if isinstance(event, TextDelta):
            content += event.text
        elif isinstance(event, CallStart):
            calls.append({"name": event.name, "arguments": ""})
        else:
            calls[event.index]["arguments"] += event.text
    return content or None, calls


def _scan(buf: str, items: list[Any]) -> tuple[str, str, int]:
    """Match ``items`` (literals, whitespace, one JSON string) at the start of ``buf``.

    Returns:
        ``(status, captured string, end)`` with status ``match``, ``partial`` (may still
        match when more text arrives) or ``fail``.
    """
    pos, captured = 0, ""
    for item in items:
        if item is _WS:
            while pos < len(buf) and buf[pos] in " \t\r\n":
                pos += 1
        elif item is _STR:
            match = _JSON_STRING.match(buf, pos)
            if match:
                captured, pos = json.loads(match.group()), match.end()
            elif pos == len(buf) or _JSON_STRING_START.fullmatch(buf, pos):
                return "partial", "", pos
            else:
                return "fail", "", pos
        else:
            chunk = buf[pos : pos + len(item)]
            if chunk != item:
                return ("partial" if item.startswith(chunk) and pos + len(chunk) == len(buf) else "fail"), "", pos
            pos += len(item)
    return "match", captured, pos
