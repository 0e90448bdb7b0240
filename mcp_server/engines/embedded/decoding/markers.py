"""Holding back text that may be the start of a marker: a stop string, a tag, a call's opening.

A streaming filter must not release text that could still turn out to begin a marker (a stop
string, ``<think>``, ``<tool_call>``): it holds back the longest tail of what it has that is
a proper prefix of one, until the next piece decides.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["held_back"]


def held_back(text: str, markers: Iterable[str]) -> int:
    """Length of the longest tail of ``text`` that is a proper prefix of one of ``markers``.

    Args:
        text: the text seen so far.
        markers: the strings that may begin at the end of ``text``.

    Returns:
        0 when no tail of ``text`` can grow into a marker; otherwise the number of trailing
        characters to hold back (always less than the marker's length).

    Example::

        held_back("The answer is <thi", ["<think>"])   # 4
    """
    longest = 0
    for marker in markers:
        for size in range(min(len(marker) - 1, len(text)), longest, -1):
            if text.endswith(marker[:size]):
                longest = size
                break
    return longest
