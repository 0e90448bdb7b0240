"""Model-family knowledge: tool-call and reasoning formats, their parsers, and detection.

The table is :mod:`mcp_server.families.table`; :func:`make_splitter` builds the per-sequence
parser the engines run (streaming and whole-output parsing are the same object).
"""

from __future__ import annotations

from mcp_server.families.base import (
    ArgumentsDelta,
    Call,
    CallStart,
    Event,
    ReasoningDelta,
    TextDelta,
    Tools,
    collect,
    prompt_opens,
)
from mcp_server.families.harmony import HarmonySplitter
from mcp_server.families.splitter import Splitter
from mcp_server.families.table import FAMILIES, HARMONY, REASONING_PARSERS, TOOL_CALL_PARSERS, Family

__all__ = [
    "FAMILIES",
    "REASONING_PARSERS",
    "TOOL_CALL_PARSERS",
    "ArgumentsDelta",
    "Call",
    "CallStart",
    "Event",
    "Family",
    "ReasoningDelta",
    "TextDelta",
    "check_names",
    "collect",
    "make_splitter",
    "parse",
]


def check_names(tool_call_parser: str | None, reasoning_parser: str | None) -> None:
    """Raise ValueError naming the known ones when a parser name is not in the table."""
    if tool_call_parser is not None and tool_call_parser not in TOOL_CALL_PARSERS:
        raise ValueError(f"unknown tool-call parser {tool_call_parser!r}; known: {', '.join(sorted(TOOL_CALL_PARSERS))}")
    if reasoning_parser is not None and reasoning_parser not in REASONING_PARSERS:
        raise ValueError(f"unknown reasoning parser {reasoning_parser!r}; known: {', '.join(sorted(REASONING_PARSERS))}")


def make_splitter(
    tool_call_parser: str | None, reasoning_parser: str | None, tools: Tools | None, prompt: str = ""
) -> Splitter | HarmonySplitter:
    """The parser of one sequence's output.

    Args:
        tool_call_parser: a :data:`TOOL_CALL_PARSERS` name, or None.
        reasoning_parser: a :data:`REASONING_PARSERS` name, or None.
        tools: the request's functions (name -> parameters schema) when it allows calls, else None.
        prompt: the rendered prompt's text (its end tells whether a think block is open).

    Raises:
        ValueError: an unknown name.
    """
    check_names(tool_call_parser, reasoning_parser)
    if HARMONY in (tool_call_parser, reasoning_parser):
        return HarmonySplitter(tools if tool_call_parser == HARMONY else None)
    reasoning = REASONING_PARSERS[reasoning_parser] if reasoning_parser else None
    syntax = TOOL_CALL_PARSERS[tool_call_parser] if tool_call_parser else None
    return Splitter(syntax, reasoning, tools, prompt_opened=bool(reasoning and prompt_opens(reasoning, prompt)))


def parse(
    tool_call_parser: str | None, reasoning_parser: str | None, text: str, tools: Tools | None = None, prompt: str = ""
) -> tuple[str | None, str | None, list[Call]]:
    """Parse a whole output: ``(content, reasoning_content, calls)`` (empty text is None)."""
    splitter = make_splitter(tool_call_parser, reasoning_parser, {} if tools is None else tools, prompt)
    return collect(splitter.feed(text) + splitter.finish())
