"""Call blocks made of a section marker pair around call marker pairs (DeepSeek V3/V3.1,
Kimi K2): ``SECTION_BEGIN (CALL_BEGIN body CALL_END)* SECTION_END``."""

from __future__ import annotations

import re
from collections.abc import Callable

from mcp_server.families.base import Block, Call

__all__ = ["find_outside_strings", "scan_section"]

_STRING_TOKENS = re.compile(r'\\.|"', re.DOTALL)


def find_outside_strings(text: str, marker: str, start: int) -> int:
    """Index of the first ``marker`` at or after ``start`` that is not inside a JSON string
    (double quotes, backslash escapes, counted from ``start``); -1 when there is none.

    A call's arguments are JSON, so a marker written inside a string value
    (``{"content": "stop at <|tool_call_end|>"}``) is text, not the end of the call.
    """
    at = text.find(marker, start)
    while at >= 0:
        quotes = sum(1 for token in _STRING_TOKENS.findall(text, start, at) if token == '"')
        if quotes % 2 == 0:
            return at
        at = text.find(marker, at + 1)
    return -1


def scan_section(
    text: str, final: bool, markers: tuple[str, str, str, str], read: Callable[[str], Call | None]
) -> Block | None:
    """Read one section.

    Args:
        text: begins with the section's opening marker.
        final: the output ended.
        markers: ``(section begin, section end, call begin, call end)``.
        read: the call in one call's body, or None when it is malformed.

    Returns:
        The block; None while incomplete. A call ends at the first call-end marker outside a
        JSON string (at the end of the output, at the first one when quotes never balance).
        Text between the markers that is not a call is dropped (vLLM and the canitoolcall
        corpus treat it as noise, not content). A malformed call makes the whole section
        content; at the end of the output the complete calls of a cut section are kept.
    """
    section_begin, section_end, call_begin, call_end = markers
    pos, calls = len(section_begin), []
    while True:
        while pos < len(text) and text[pos] in " \t\r\n":
            pos += 1
        rest = text[pos:]
        if rest.startswith(section_end):
            return Block(tuple(calls), pos + len(section_end), empty=True)
        if rest.startswith(call_begin):
            close = find_outside_strings(text, call_end, pos)
            if close < 0 and final:
                close = text.find(call_end, pos)
            if close < 0:
                break
            call = read(text[pos + len(call_begin) : close])
            if call is None:
                return _malformed(text, final, section_end)
            calls.append(call)
            pos = close + len(call_end)
            continue
        if rest and not any(marker.startswith(rest) for marker in (section_end, call_begin)):
            found = [at for marker in (section_end, call_begin) if (at := text.find(marker, pos)) >= 0]
            if found:  # noise up to the next marker
                pos = min(found)
                continue
        break
    if final:
        return Block(tuple(calls), len(text)) if calls else None
    return None


def _malformed(text: str, final: bool, section_end: str) -> Block | None:
    end = text.find(section_end)
    if end >= 0:
        return Block((), end + len(section_end))
    return Block((), len(text)) if final else None
