"""The one interface every model family's output syntax implements, and the splitter that runs it.

A model's raw output mixes three things: a chain of thought (``reasoning_content``), the
answer (``content``) and tool calls (OpenAI ``tool_calls``), each family marking them its
own way. :class:`Splitter` turns that text, fed in pieces of any size (one character, a
token, the whole output), into :data:`Event` s. Whole-output parsing is ``feed(text)`` then
``finish()`` on the same object, so a stream always joins to the non-streamed result.

A family's tool-call syntax is a :class:`ToolSyntax`: the markers that may open a call
block and a ``scan`` function that reads one block from its opener on. ``scan`` answers
only once later text cannot change its answer (so any split gives the same result):

* ``None``: the block is not complete yet (at the end of the output: it was cut off, and
  is dropped: no tool call, and no markup in content; see README "Truncated calls");
* ``Block(calls, end)``: the block ends at ``end``; ``calls`` are its calls, or ``()``
  when the text is not a call after all (then ``text[:end]`` is content).

Reasoning is data (:class:`ReasoningFormat`): an opening and a closing marker; the prompt
may already have opened the block (:func:`prompt_opens`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from mcp_server.families.arguments import ArgumentSyntax

__all__ = [
    "ArgumentsDelta",
    "Block",
    "Call",
    "CallTemplate",
    "CallStart",
    "Event",
    "ReasoningDelta",
    "ReasoningFormat",
    "Stepper",
    "TextDelta",
    "ToolSyntax",
    "Tools",
    "balanced_end",
    "coerce",
    "collect",
    "held_back",
    "json_arguments",
    "prompt_opens",
]

Tools = Mapping[str, Mapping[str, Any]]
"""The request's tools by function name: each function's ``parameters`` JSON Schema."""


@dataclass(frozen=True)
class TextDelta:
    """A piece of content."""

    text: str


@dataclass(frozen=True)
class ReasoningDelta:
    """A piece of chain of thought."""

    text: str


@dataclass(frozen=True)
class CallStart:
    """A tool call begins; ``index`` counts calls from 0 in output order."""

    index: int
    name: str


@dataclass(frozen=True)
class ArgumentsDelta:
    """A piece of the JSON arguments text of call ``index``."""

    index: int
    text: str


Event = TextDelta | ReasoningDelta | CallStart | ArgumentsDelta


@dataclass(frozen=True)
class Call:
    """One parsed call: the function name and its arguments as JSON object text."""

    name: str
    arguments: str


@dataclass(frozen=True)
class Block:
    """What :attr:`ToolSyntax.scan` read: the calls of a block ending at ``end``.

    ``calls == ()``: the text is not a call and ``text[:end]`` is content, unless ``empty``
    (a well-formed block without calls, such as an empty call section: dropped).
    """

    calls: tuple[Call, ...]
    end: int
    empty: bool = False


@dataclass(frozen=True)
class CallTemplate:
    """How to write one call: data for grammar backends (which compile it into a constraint)
    and for rendering past calls into a prompt.

    The text of a call is ``begin + ARGUMENTS + end``: the arguments are a JSON object, or
    written in ``arguments``' notation; in ``begin``, ``{name}`` is the function name as is
    and ``{name_json}`` the name as a JSON string.

    Attributes:
        begin: text before the arguments.
        end: text after the arguments.
        trigger: the text that starts every call (what a free-text grammar watches for).
        separator: text between two calls of one turn.
        arguments: the notation of arguments that are not one JSON object, or None.
    """

    begin: str
    end: str
    trigger: str
    separator: str = "\n"
    arguments: ArgumentSyntax | None = None

    def opening(self, name: str) -> str:
        """``begin`` for function ``name``."""
        return self.begin.replace("{name_json}", json.dumps(name, ensure_ascii=False)).replace("{name}", name)


@dataclass(frozen=True)
class ToolSyntax:
    """How one family writes tool calls in its output.

    Attributes:
        name: SGLang's ``--tool-call-parser`` name (``hermes``, ``llama3``, ...).
        openers: markers that may begin a call block.
        scan: ``scan(text, final, tools) -> Block | None``; ``text`` begins with an opener;
            ``final`` is True at the end of the output.
        ends_reasoning: an opener (or a ``drop`` marker) also ends an unclosed think block
            (the model called a tool or answered without closing its thoughts, or without
            thinking in a thinking prompt).
        drop: markers that are neither content nor calls (section tags), removed from content.
        template: how to write a call (for constrained decoding and prompt rendering).
    """

    name: str
    openers: tuple[str, ...]
    scan: Callable[[str, bool, Tools], Block | None]
    ends_reasoning: bool = False
    drop: tuple[str, ...] = ()
    template: CallTemplate | None = None


@dataclass(frozen=True)
class ReasoningFormat:
    """How a family marks its chain of thought.

    Attributes:
        name: SGLang's ``--reasoning-parser`` name.
        start: the opening marker.
        end: the closing marker.
    """

    name: str
    start: str = "<think>"
    end: str = "</think>"


def prompt_opens(fmt: ReasoningFormat, prompt: str) -> bool:
    """Whether a rendered prompt (the generation prompt included) left a think block open.

    True when the prompt's last reasoning marker is the opening one (Qwen3-Thinking's
    ``<think>\\n``, DeepSeek-R1's ``<think>``); a prompt that closes it at once
    (``<think>\\n\\n</think>\\n\\n``: thinking off) leaves the output outside it.
    """
    return prompt.rfind(fmt.start) > prompt.rfind(fmt.end) if fmt.start in prompt else False


def held_back(text: str, markers: tuple[str, ...] | list[str]) -> int:
    """Length of the longest tail of ``text`` that is a proper prefix of one of ``markers``.

    A stream must not release text that may still turn out to begin a marker.
    Example: ``held_back("The answer is <thi", ["<think>"]) == 4``.
    """
    longest = 0
    for marker in markers:
        for size in range(min(len(marker) - 1, len(text)), longest, -1):
            if text.endswith(marker[:size]):
                longest = size
                break
    return longest


def balanced_end(text: str, start: int, quotes: str = '"') -> int | None:
    """End (exclusive) of the bracketed value (``{...}`` or ``[...]``) at ``text[start]``.

    Brackets inside strings (any of ``quotes``, backslash escapes) do not count. None when
    the value is not closed yet.
    """
    depth, quote, escaped = 0, "", False
    for pos in range(start, len(text)):
        char = text[pos]
        if quote:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == quote:
                quote = ""
        elif char in quotes:
            quote = char
        elif char in "{[(":
            depth += 1
        elif char in "}])":
            depth -= 1
            if depth == 0:
                return pos + 1
    return None


def json_arguments(value: Any) -> str | None:
    """Arguments JSON text of a decoded value: an object as compact-ish JSON; None otherwise."""
    if not isinstance(value, dict):
        return None
    return json.dumps(value, ensure_ascii=False)


def coerce(text: str, schema: Mapping[str, Any] | None) -> Any:
    """The JSON value of a raw parameter value (XML-style formats write strings unquoted).

    A parameter whose schema says ``string`` stays text; otherwise the text is read as JSON
    when it is JSON (``42``, ``true``, ``{"a": 1}``), else kept as text.
    """
    types = (schema or {}).get("type")
    types = [types] if isinstance(types, str) else list(types or [])
    if types == ["string"]:
        return text
    try:
        return json.loads(text)
    except ValueError:
        # Python's spelling of the JSON literals, which coder models write for booleans.
        return _PYTHON_LITERALS.get(text.strip(), text) if types else text


_PYTHON_LITERALS = {"True": True, "False": False, "None": None}


def collect(events: list[Event]) -> tuple[str | None, str | None, list[Call]]:
    """``(content, reasoning_content, calls)`` of a list of events; empty text is None."""
    content = "".join(e.text for e in events if isinstance(e, TextDelta))
    reasoning = "".join(e.text for e in events if isinstance(e, ReasoningDelta))
    names: list[str] = []
    arguments: list[str] = []
    for event in events:
        if isinstance(event, CallStart):
            names.append(event.name)
            arguments.append("")
        elif isinstance(event, ArgumentsDelta):
            arguments[event.index] += event.text
    return content or None, reasoning or None, [Call(n, a) for n, a in zip(names, arguments, strict=True)]


class Stepper:
    """The driver the incremental splitters share: output accumulates in ``_buf``, and
    ``_step(events, final)`` consumes what it can of it, appending the events it completes,
    and returns True while it may consume more."""

    _buf: str

    def feed(self, text: str) -> list[Event]:
        """Consume the next piece of output; return the events it completes."""
        self._buf += text
        return self._drain(final=False)

    def _drain(self, final: bool) -> list[Event]:
        """Step until nothing more can be consumed (``final``: the output has ended)."""
        events: list[Event] = []
        while self._step(events, final):
            pass
        return events

    def _step(self, events: list[Event], final: bool) -> bool:
        raise NotImplementedError
