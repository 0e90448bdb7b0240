"""Turn one sequence's raw text deltas into OpenAI message parts.

The embedded engine's model writes plain text: a chain of thought between ``<think>`` tags
(reasoning models), tool calls in its chat-template family's format (e.g. Hermes'
``<tool_call>{...}</tool_call>``), and content. :class:`OutputProcessor` splits them, per
delta, into ``reasoning_content``, ``text`` and :class:`~mcp_server.engines.base.ToolCallDelta`
pieces, and checks the finished output: OpenAI's rule is ``finish_reason: "tool_calls"``
when the model called tools, and a JSON answer that ends with ``stop`` but does not match
its ``response_format`` (or a call whose arguments do not match the tool's parameters) is
never returned as a success: it raises :class:`~mcp_server.errors.ServiceError`
(HTTP 500, code ``invalid_output``). Grammar-constrained decoding makes that a should-never-
happen path; this is the final check behind it. Output that one of the client's ``stop``
strings cut short is returned as it is, unchecked, like output cut by ``max_tokens``: the
cut is the client's choice (OpenAI returns such output the same way).

Tool calls come whole (see :mod:`~mcp_server.engines.embedded.decoding.toolcalls.parser`): a
call cut by ``max_tokens`` is dropped, and its markup never reaches ``content``. A call that
repeats an earlier call of the same answer exactly (same name, same arguments text) ends the
answer there: it is dropped, and the answer ends with ``tool_calls`` (the delta carries that
finish reason, which tells the engine to stop generating). Small models otherwise tend to
repeat their last call until the context is full, since after a call the grammar allows
another one as well as the end of the answer; a repeated call asks for nothing new.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from mcp_server.engines.base import GenerationDelta, GenerationRequest, ToolCallDelta
from mcp_server.engines.embedded.decoding.constraints import validate_output
from mcp_server.engines.embedded.decoding.reasoning import ReasoningParser
from mcp_server.engines.embedded.decoding.toolcalls import (
    ArgumentsDelta,
    CallStart,
    StreamParser,
    TextDelta,
    ToolCallFormat,
)
from mcp_server.engines.embedded.decoding.toolcalls.format import parameters_of
from mcp_server.errors import ServiceError

__all__ = ["OutputProcessor"]


class OutputProcessor:
    """Splits and checks the output of one sequence.

    Args:
        request: the generation request (its tools, tool_choice and response_format).
        tool_format: the model's tool-call family, used when the request has tools and
            ``tool_choice`` is not ``none``.
        reasoning_parser: the model's reasoning format name, or None.
        stop_hit: tells, once the last delta arrived, whether a ``stop`` string ended the
            output; such output is not checked.
    """

    def __init__(
        self,
        request: GenerationRequest,
        tool_format: ToolCallFormat | None,
        reasoning_parser: str | None = None,
        stop_hit: Callable[[], bool] = lambda: False,
    ):
        self._request = request
        self._stop_hit = stop_hit
        calls_allowed = bool(request.tools) and request.tool_choice != "none"
        self._tools = StreamParser(tool_format) if calls_allowed and tool_format else None
        self._reasoning = ReasoningParser(reasoning_parser) if reasoning_parser else None
        self._content: list[str] = []
        self._calls: list[dict[str, str]] = []
        self._name = ""
        self._ended = False  # a repeated call ended the answer before the engine did

    def process(self, delta: GenerationDelta) -> GenerationDelta:
        """Split one raw delta; on the last one, flush, check, and fix the finish reason.

        Raises:
            ServiceError: (code ``invalid_output``) the finished output does not validate
                (and no stop string cut it).
        """
        finished = delta.finish_reason is not None
        reasoning, content = self._split_reasoning(delta.text, finished)
        text, calls = self._split_calls(content, finished, truncated=delta.finish_reason == "length")
        self._content.append(text)
        finish_reason = "stop" if self._ended and not finished else delta.finish_reason
        finished = finish_reason is not None
        if finished and self._calls and finish_reason == "stop":
            finish_reason = "tool_calls"
        if finish_reason in ("stop", "tool_calls") and not self._stop_hit():
            self._check()
        return replace(delta, text=text, reasoning_content=reasoning, tool_calls=calls, finish_reason=finish_reason)

    def _split_reasoning(self, text: str, finished: bool) -> tuple[str, str]:
        if self._reasoning is None:
            return "", text
        reasoning, content = self._reasoning.feed(text)
        if finished:
            tail_reasoning, tail_content = self._reasoning.finish()
            reasoning, content = reasoning + tail_reasoning, content + tail_content
        return reasoning, content

    def _split_calls(self, text: str, finished: bool, truncated: bool) -> tuple[str, tuple[ToolCallDelta, ...]]:
        if self._tools is None:
            return text, ()
        events = self._tools.feed(text) + (self._tools.finish(truncated) if finished else [])
        pieces: list[str] = []
        calls: list[ToolCallDelta] = []
        for event in events:
            if isinstance(event, TextDelta):
                pieces.append(event.text)
            elif isinstance(event, CallStart):
                self._name = event.name
            elif isinstance(event, ArgumentsDelta):  # the whole arguments of the call just started
                call = {"name": self._name, "arguments": event.text}
                if call in self._calls:
                    self._ended = True
                    break
                self._calls.append(call)
                calls.append(ToolCallDelta(event.index, f"call_{uuid.uuid4().hex[:24]}", self._name, event.text))
        return "".join(pieces), tuple(calls)

    def _check(self) -> None:
        if self._calls:
            for index, call in enumerate(self._calls):
                error = validate_output(call["arguments"] or "{}", _tool_format(self._request, call["name"]))
                if error is not None:
                    raise ServiceError(f"tool call {index} ({call['name']}): {error.message}", code="invalid_output")
            return
        if self._tools is None:  # with tools allowed, the tool grammar replaces response_format
            error = validate_output("".join(self._content), self._request.response_format)
            if error is not None:
                raise error


def _tool_format(request: GenerationRequest, name: str) -> dict[str, Any]:
    """The tool ``name``'s parameters as a ``json_schema`` response format, for the final check."""
    for tool in request.tools or ():
        function = tool.get("function", {})
        if function.get("name") == name:
            return {"type": "json_schema", "json_schema": {"name": name, "schema": parameters_of(function)}}
    raise ServiceError(f"the model called an unknown tool {json.dumps(name)}", code="invalid_output")
