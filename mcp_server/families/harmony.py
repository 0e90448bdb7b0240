"""``gpt-oss``: OpenAI's harmony response format, tool calls and reasoning in one (SGLang
``gpt-oss`` for both ``--tool-call-parser`` and ``--reasoning-parser``).

The output is a run of messages, each a header up to ``<|message|>`` and a body::

    <|channel|>analysis<|message|>chain of thought<|end|>
    <|start|>assistant to=functions.get_weather<|channel|>commentary <|constrain|>json<|message|>{"city": "Paris"}
    <|start|>assistant<|channel|>final<|message|>answer

The ``analysis`` channel is reasoning; ``final`` and ``commentary`` (a preamble) are content;
a header with the recipient ``to=functions.NAME`` (in the role or the channel part) makes the
body that function's JSON arguments. Messages to other recipients (built-in tools) and on
unknown channels are dropped. Marker text inside a body (a call's JSON strings, reasoning
that talks about ``<|call|>``) is kept: a body ends only at its own terminator.
"""

from __future__ import annotations

import re

from mcp_server.families.base import (
    ArgumentsDelta,
    CallStart,
    Event,
    ReasoningDelta,
    ReasoningFormat,
    Stepper,
    TextDelta,
    Tools,
    balanced_end,
    held_back,
)
from mcp_server.families.jsoncalls import call_of, decode

__all__ = ["HARMONY_REASONING", "HarmonySplitter"]

HARMONY_REASONING = ReasoningFormat("gpt-oss", start="<|channel|>analysis<|message|>", end="<|end|>")
"""The reasoning entry of the family table (the splitter reads channels itself)."""

_MESSAGE, _END, _RETURN, _CALL = "<|message|>", "<|end|>", "<|return|>", "<|call|>"
_CHANNEL = re.compile(r"<\|channel\|>\s*([A-Za-z_]+)")
_RECIPIENT = re.compile(r"to=([^\s<]+)")


class HarmonySplitter(Stepper):
    """Incremental splitter of harmony output (the interface of :class:`~mcp_server.families.base.Splitter`)."""

    def __init__(self, tools: Tools | None):
        self._calls_allowed = tools is not None
        self._buf = ""
        self._kind: str | None = None  # None: reading a header; else reasoning/content/call/drop
        self._name = ""
        self._calls = 0
        self._lead = {"reasoning": True, "content": True}

    def finish(self, truncated: bool = False) -> list[Event]:
        """End of output: flush the open body (a cut call or header is dropped; ``truncated``,
        as :meth:`Splitter.finish`, changes nothing here: headers are special tokens)."""
        events = self._drain(final=True)
        self._buf = ""
        return events

    def _step(self, events: list[Event], final: bool) -> bool:
        if self._kind is None:
            at = self._buf.find(_MESSAGE)
            ended = self._buf.find(_END)
            if 0 <= ended < (at if at >= 0 else len(self._buf)):  # a garbled header: skip it
                self._buf = self._buf[ended + len(_END) :]
                return True
            if at < 0:
                return False
            self._kind = self._classify(self._buf[:at])
            self._buf = self._buf[at + len(_MESSAGE) :]
            return True
        if self._kind == "call":
            return self._step_call(events, final)
        ends = (_END, _RETURN) if self._kind != "drop" else (_END, _RETURN, _CALL)
        hits = [at for marker in ends if (at := self._buf.find(marker)) >= 0]
        if hits:
            self._body(self._buf[: min(hits)], events)
            marker = next(m for m in ends if self._buf.startswith(m, min(hits)))
            self._buf, self._kind = self._buf[min(hits) + len(marker) :], None
            return True
        keep = 0 if final else held_back(self._buf, ends)
        self._body(self._buf[: len(self._buf) - keep], events)
        self._buf = self._buf[len(self._buf) - keep :]
        return False

    def _step_call(self, events: list[Event], final: bool) -> bool:
        start = len(self._buf) - len(self._buf.lstrip())
        end = balanced_end(self._buf, start) if self._buf[start:].startswith("{") else None
        if end is None:
            if not final and (start == len(self._buf) or self._buf[start] == "{"):
                return False
            self._kind = "drop"  # not a JSON object (or cut off): no call
            return True
        call = call_of({"name": self._name, "arguments": decode(self._buf[start:end])})
        if call is not None:
            events += [CallStart(self._calls, call.name), ArgumentsDelta(self._calls, call.arguments)]
            self._calls += 1
        self._buf, self._kind = self._buf[end:], "drop"
        return True

    def _classify(self, header: str) -> str:
        channels = _CHANNEL.findall(header)
        recipient = _RECIPIENT.findall(header)
        if recipient:
            if recipient[-1].startswith("functions.") and self._calls_allowed:
                self._name = recipient[-1].removeprefix("functions.")
                return "call"
            return "drop"
        channel = channels[-1] if channels else ""
        return {"analysis": "reasoning", "final": "content", "commentary": "content"}.get(channel, "drop")

    def _body(self, text: str, events: list[Event]) -> None:
        if self._kind not in self._lead or not text:
            return
        if self._lead[self._kind]:
            text = text.lstrip()
            self._lead[self._kind] = not text
        if text:
            events.append(ReasoningDelta(text) if self._kind == "reasoning" else TextDelta(text))
