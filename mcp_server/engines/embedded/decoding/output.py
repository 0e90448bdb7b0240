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

A call that repeats an earlier call of the same answer exactly (same name, same arguments
text) ends the answer there: it is dropped, and the answer ends with ``tool_calls`` (the
delta carries that finish reason, which tells the engine to stop generating). Small models
otherwise tend to repeat their last call until the context is full, since after a call the
grammar allows another one as well as the end of the answer; a repeated call asks for
nothing new. (The family table reports each call whole, so the check sees whole calls.)
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from mcp_server.engines.base import GenerationDelta, GenerationRequest, ToolCallDelta
from mcp_server.engines.embedded.decoding.constraints import validate_output
from mcp_server.engines.embedded.decoding.toolcalls.format import parameters_of
from mcp_server.errors import ServiceError
from mcp_server.families import ArgumentsDelta, CallStart, ReasoningDelta, TextDelta, make_splitter

__all__ = ["PROMPT_TAIL_TOKENS", "OutputProcessor"]

PROMPT_TAIL_TOKENS = 32
"""Prompt tokens decoded to see whether the generation prompt opened a think block (the
``prompt_tail`` an :class:`OutputProcessor` is given)."""


class OutputProcessor:
    """Splits and checks the output of one sequence.

    Args:
        request: the generation request (its tools, tool_choice and response_format).
        tool_call_parser: the model's tool-call format (a name of the family table,
            :data:`mcp_server.families.TOOL_CALL_PARSERS`), used when the request has tools
            and ``tool_choice`` is not ``none``; None: calls are content.
        reasoning_parser: the model's reasoning format name, or None.
        prompt: the rendered prompt's text: whether it opened a think block.
        stop_hit: tells, once the last delta arrived, whether a ``stop`` string ended the
            output; such output is not checked.

    Raises:
        ValueError: an unknown format name.
    """

    def __init__(
        self,
        request: GenerationRequest,
        tool_call_parser: str | None,
        reasoning_parser: str | None = None,
        prompt: str = "",
        stop_hit: Callable[[], bool] = lambda: False,
    ):
        self._request = request
        self._stop_hit = stop_hit
        calls_allowed = bool(request.tools) and request.tool_choice != "none" and tool_call_parser is not None
        tools = {_name(tool): parameters_of(tool.get("function") or {}) for tool in request.tools or ()}
        self._splitter = make_splitter(tool_call_parser, reasoning_parser, tools if calls_allowed else None, prompt)
        self._calls_allowed = calls_allowed
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
        reasoning, text, calls = self._split(delta.text, finished, truncated=delta.finish_reason == "length")
        self._content.append(text)
        finish_reason = "stop" if self._ended and not finished else delta.finish_reason
        finished = finish_reason is not None
        if finished and self._calls and finish_reason == "stop":
            finish_reason = "tool_calls"
        if finish_reason in ("stop", "tool_calls") and not self._stop_hit():
            self._check()
        return replace(delta, text=text, reasoning_content=reasoning, tool_calls=calls, finish_reason=finish_reason)

    def _split(self, text: str, finished: bool, truncated: bool) -> tuple[str, str, tuple[ToolCallDelta, ...]]:
        events = self._splitter.feed(text) + (self._splitter.finish(truncated) if finished else [])
        reasoning: list[str] = []
        pieces: list[str] = []
        calls: list[ToolCallDelta] = []
        for event in events:
            if isinstance(event, TextDelta):
                pieces.append(event.text)
            elif isinstance(event, ReasoningDelta):
                reasoning.append(event.text)
            elif isinstance(event, CallStart):
                self._name = event.name
            elif isinstance(event, ArgumentsDelta):  # the whole arguments of the call just started
                call = {"name": self._name, "arguments": event.text}
                if call in self._calls:
                    self._ended = True
                    break
                self._calls.append(call)
                calls.append(ToolCallDelta(event.index, f"call_{uuid.uuid4().hex[:24]}", self._name, event.text))
        return "".join(reasoning), "".join(pieces), tuple(calls)

    def _check(self) -> None:
        if self._calls:
            for index, call in enumerate(self._calls):
                error = validate_output(call["arguments"] or "{}", _tool_format(self._request, call["name"]))
                if error is not None:
                    raise ServiceError(f"tool call {index} ({call['name']}): {error.message}", code="invalid_output")
            return
        if not self._calls_allowed:  # with tools allowed, the tool grammar replaces response_format
            error = validate_output("".join(self._content), self._request.response_format)
            if error is not None:
                raise error


def _name(tool: Any) -> str:
    function = tool.get("function") if isinstance(tool, dict) else None
    return str((function or {}).get("name", ""))


def _tool_format(request: GenerationRequest, name: str) -> dict[str, Any]:
    """The tool ``name``'s parameters as a ``json_schema`` response format, for the final check."""
    for tool in request.tools or ():
        function = tool.get("function", {})
        if function.get("name") == name:
            return {"type": "json_schema", "json_schema": {"name": name, "schema": parameters_of(function)}}
    raise ServiceError(f"the model called an unknown tool {json.dumps(name)}", code="invalid_output")
