"""The splitter that runs a family's syntax over one sequence's output (see :mod:`.base`)."""

from __future__ import annotations

from dataclasses import dataclass

from mcp_server.families.base import (
    ArgumentsDelta,
    CallStart,
    Event,
    ReasoningDelta,
    ReasoningFormat,
    Stepper,
    TextDelta,
    Tools,
    ToolSyntax,
    held_back,
)

__all__ = ["Splitter"]

_LAYOUT = "\r\n"
"""Line breaks next to a call are layout (templates put calls on their own lines); spaces are text."""


_START, _REASONING, _CONTENT = range(3)


@dataclass
class _Pending:
    """Whitespace held between content and what follows (dropped next to a call or a marker)."""

    space: str = ""
    at_edge: bool = True  # nothing but markers or calls came before: leading space is dropped


class Splitter(Stepper):
    """Incremental splitter of one sequence's output into content, reasoning and tool calls.

    Args:
        syntax: the tool-call syntax, or None (calls are content); its ``drop`` markers are
            removed from content even when the request allows no calls.
        reasoning: the reasoning format, or None (no chain of thought).
        tools: the request's functions (name -> parameters schema); None or empty when the
            request allows no tool calls (then call markers are content).
        prompt_opened: the prompt already opened the think block (:func:`prompt_opens`).

    Example::

        splitter = Splitter(HERMES, QWEN3, tools={"f": {}}, prompt_opened=False)
        events = splitter.feed("<think>hm</think><tool_call>") + splitter.feed('{"name": "f", "arguments": {}}</tool_call>')
        events += splitter.finish()
    """

    def __init__(
        self,
        syntax: ToolSyntax | None,
        reasoning: ReasoningFormat | None,
        tools: Tools | None,
        prompt_opened: bool = False,
    ):
        self._syntax = syntax
        self._openers = syntax.openers if syntax is not None and tools is not None else ()
        self._tools = tools or {}
        self._reasoning = reasoning
        self._state = _REASONING if reasoning is not None and prompt_opened else _START
        self._skip_start = self._state == _REASONING  # a redundant opener may still come
        self._buf = ""
        self._calls = 0
        self._pending = _Pending()
        self._reasoning_lead = True
        self._truncated = False

    def finish(self, truncated: bool = False) -> list[Event]:
        """End of output: flush what was held back (a block cut off is dropped).

        Args:
            truncated: ``max_tokens`` cut the output: text that may begin a call marker
                (``<tool``) is markup cut short, and is dropped too; otherwise it is content.
        """
        self._truncated = truncated
        events = self._drain(final=True)
        if self._state == _REASONING:
            self._reason(self._buf.rstrip(), events)
        self._buf = ""
        return events

    # -- states

    def _step(self, events: list[Event], final: bool) -> bool:
        if self._state == _START:
            return self._step_start(events, final)
        if self._state == _REASONING:
            return self._step_reasoning(events, final)
        return self._step_content(events, final)

    def _step_start(self, events: list[Event], final: bool) -> bool:
        stripped = self._buf.lstrip()
        fmt = self._reasoning
        if fmt is None:
            self._state = _CONTENT
            return True
        if not stripped or (fmt.start.startswith(stripped) and not final):
            return False
        if stripped.startswith(fmt.start):
            self._buf, self._state = stripped[len(fmt.start) :], _REASONING
            return True
        self._state = _CONTENT
        return True

    def _step_reasoning(self, events: list[Event], final: bool) -> bool:
        fmt = self._reasoning
        assert fmt is not None
        if self._skip_start:
            stripped = self._buf.lstrip()
            if fmt.start.startswith(stripped) and not final:
                return False
            self._skip_start = False
            if stripped.startswith(fmt.start):
                self._buf = stripped[len(fmt.start) :]
        ends = [fmt.end] + (list(self._openers + self._syntax.drop) if self._syntax and self._syntax.ends_reasoning else [])
        hits = [(at, marker) for marker in ends if (at := self._buf.find(marker)) >= 0]
        if hits:
            at, marker = min(hits)
            self._reason(self._buf[:at].rstrip(), events)
            self._buf = self._buf[at + len(marker) :] if marker == fmt.end else self._buf[at:]  # an opener stays
            self._state = _CONTENT
            return True
        keep = held_back(self._buf, ends)
        body = self._buf[: len(self._buf) - keep]
        release = body.rstrip()  # trailing space before </think> is not reasoning
        self._reason(release, events)
        self._buf = self._buf[len(release) :]
        return False

    def _step_content(self, events: list[Event], final: bool) -> bool:
        markers = list(self._openers + self._syntax.drop) if self._syntax else []
        hits = [(at, marker) for marker in markers if (at := self._buf.find(marker)) >= 0]
        if not hits:
            keep = 0 if final and not self._truncated else held_back(self._buf, markers)
            self._content(self._buf[: len(self._buf) - keep], events)
            self._buf = self._buf[len(self._buf) - keep :]
            return False
        at, marker = min(hits, key=lambda hit: (hit[0], -len(hit[1])))
        self._content(self._buf[:at], events)
        self._buf = self._buf[at:]
        assert self._syntax is not None
        if marker in self._syntax.drop:
            self._buf = self._buf[len(marker) :]
            self._pending.space, self._pending.at_edge = "", True
            return True
        block = self._syntax.scan(self._buf, final, self._tools)
        if block is None:
            if final:
                self._buf = ""  # a call cut off by the end of the output: dropped
            return False
        if not block.calls and not block.empty:
            self._content(self._buf[: block.end], events, literal=True)
        for call in block.calls:
            events += [CallStart(self._calls, call.name), ArgumentsDelta(self._calls, call.arguments)]
            self._calls += 1
            self._pending.space, self._pending.at_edge = "", True
        self._buf = self._buf[block.end :]
        return True

    # -- output

    def _reason(self, text: str, events: list[Event]) -> None:
        if self._reasoning_lead:
            text = text.lstrip()
            self._reasoning_lead = not text
        if text:
            events.append(ReasoningDelta(text))

    def _content(self, text: str, events: list[Event], literal: bool = False) -> None:
        """Emit content, holding trailing whitespace until something other than a call follows."""
        if not text:
            return
        pending = self._pending
        if pending.at_edge:
            text = text.lstrip(_LAYOUT) if self._calls else text.lstrip()
            if not text:
                return
            pending.at_edge = False
        body = text if literal else text.rstrip(_LAYOUT)
        if body:
            events.append(TextDelta(pending.space + body))
            pending.space = ""
        pending.space += text[len(body) :]
