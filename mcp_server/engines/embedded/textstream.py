"""Incremental detokenization with stop-string hold-back.

Tokens arrive one at a time; :class:`TextStream` turns them into text pieces that are
safe to send: never part of a UTF-8 character, never a stop string, never text that may
still turn out to begin one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from mcp_server.families.base import held_back

__all__ = ["TextStream"]

_INCOMPLETE = "\ufffd"  # what a decoder makes of a character whose bytes are not all there yet


class TextStream:
    """Turn a stream of token ids into safe text pieces for one sequence.

    Decoding follows the prefix-window method of Hugging Face TGI: the newest tokens are
    decoded together with a few before them, and text is released only once it no longer
    ends in a partial character. Released text then passes a stop-string filter that
    holds back the longest tail which could still grow into a stop string.

    Args:
        decode: turns a list of token ids into text (a partial character becomes U+FFFD).
        stop: stop strings; empty strings are ignored.

    Attributes:
        stopped: True once a stop string was seen; later tokens are ignored.
    """

    def __init__(self, decode: Callable[[list[int]], str], stop: Sequence[str] = ()):
        self._decode = decode
        self._stop = tuple(s for s in stop if s)
        self._ids: list[int] = []
        self._prefix = 0  # start of the decode window
        self._read = 0  # tokens before this index have been released
        self._held = ""  # released by the decoder, withheld by the stop filter
        self.stopped = False

    def push(self, token_id: int) -> str:
        """Add one token; return the text that can be sent now (often ``""``)."""
        if self.stopped:
            return ""
        self._ids.append(token_id)
        prefix_text = self._decode(self._ids[self._prefix : self._read])
        text = self._decode(self._ids[self._prefix :])
        if len(text) <= len(prefix_text) or text.endswith(_INCOMPLETE):
            return ""
        self._prefix, self._read = self._read, len(self._ids)
        return self._filter(text[len(prefix_text) :], final=False)

    def flush(self) -> str:
        """End the sequence; return everything still withheld (minus any stop string).

        A character whose bytes were cut off by the end of the sequence (``max_tokens``
        reached mid-character) is dropped rather than sent as U+FFFD.
        """
        if self.stopped:
            return ""
        prefix_text = self._decode(self._ids[self._prefix : self._read])
        rest = self._decode(self._ids[self._prefix :])[len(prefix_text) :].rstrip(_INCOMPLETE)
        self._prefix = self._read = len(self._ids)
        return self._filter(rest, final=True)

    def _filter(self, new: str, *, final: bool) -> str:
        text = self._held + new
        hits = [i for i in (text.find(s) for s in self._stop) if i >= 0]
        if hits:
            self.stopped = True
            self._held = ""
            return text[: min(hits)]
        keep = 0 if final else held_back(text, self._stop)
        self._held = text[len(text) - keep :]
        return text[: len(text) - keep]
