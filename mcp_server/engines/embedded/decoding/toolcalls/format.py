"""One tool-call text format: ``prefix + {"name": N, "<key>": ARGS} + suffix``.

A :class:`ToolCallFormat` is data (a registry entry); from it come the grammar constraint
(:meth:`ToolCallFormat.constraint`) and the
prompt rendering (:mod:`mcp_server.engines.embedded.decoding.toolcalls.render`), so every family shares one implementation.

Tool-choice semantics follow OpenAI's Chat Completions reference (``tool_choice``,
``parallel_tool_calls``); the structural tag is xgrammar's JSON form of one, which every grammar
backend compiles (:mod:`mcp_server.engines.embedded.decoding.backends`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from mcp_server.capability.schemas import NO_PARAMETERS
from mcp_server.families.arguments import ArgumentSyntax, render_arguments
from mcp_server.errors import InvalidRequest

__all__ = ["CALL_SEPARATOR", "ToolCallFormat", "function_of", "parameters_of"]

CALL_SEPARATOR = "\n"
"""Text between two consecutive calls of one turn (as the prompt rendering writes them)."""

"""The arguments schema of a tool without ``parameters``: only ``{}`` is generated."""


@dataclass(frozen=True)
class ToolCallFormat:
    """How one chat-template family writes tool calls, tool lists and tool results.

    Attributes:
        name: the registry name (``hermes``, ``llama3``).
        prefix: text before the call object (``"<tool_call>\\n"``), may be empty.
        arguments_key: the key holding the arguments (``arguments`` or ``parameters``).
        suffix: text after the call object (``"\\n</tool_call>"``), may be empty.
        trigger: the text that starts a call in free text; each call begins with it.
        instructions: system-prompt block for templates without tool support; ``{tools}``
            is replaced by one JSON tool definition per line.
        result_role: the role a tool result is sent with.
        result_open: text before a tool result.
        result_close: text after a tool result.
        begin: when set, the text before a call's arguments (``{name}``: the function name,
            ``{name_json}``: the name as a JSON string) instead of ``prefix`` and the name key;
            ``end`` then replaces ``"}" + suffix``. Formats from the family table
            (:data:`mcp_server.families.TOOL_CALL_PARSERS`) are written this way.
        end: the text after a call's arguments, with ``begin``.
        separator: text between two calls of one turn.
        arguments: the notation of arguments that are not one JSON object (XML-style,
            pythonic), or None (JSON); with it a structural tag's contents are ``arguments``
            contents (``{"type": "arguments", "syntax": ..., "json_schema": ..., "param": ...}``),
            which only the llguidance backend compiles.
    """

    name: str
    prefix: str
    arguments_key: str
    suffix: str
    trigger: str
    instructions: str
    result_role: str
    result_open: str = ""
    result_close: str = ""
    begin: str | None = None
    end: str = ""
    separator: str = CALL_SEPARATOR
    arguments: ArgumentSyntax | None = None

    def call_text(self, name: str, arguments: str) -> str:
        """The text of one call, exactly as the grammar emits it.

        Args:
            name: the function name.
            arguments: the arguments as JSON text.
        """
        if self.arguments is not None:
            arguments = render_arguments(self.arguments, arguments)
        return self._begin(name) + arguments + self._end

    def constraint(
        self,
        tools: list[dict[str, Any]] | None,
        tool_choice: str | dict[str, Any] | None,
        parallel_tool_calls: bool,
        check_parameters: Callable[[Any, str], None],
    ) -> dict[str, Any] | None:
        """Build the structural tag (a JSON-able dict) that makes tool calls valid by construction.

        ``none`` (or no tools): None. ``auto`` / None: free text, then calls.
        ``required``: calls only, one or more, one per line (the separator the chat
        templates write between calls, :data:`CALL_SEPARATOR`), then the end of the answer;
        no text before, between or after them (vLLM's ``required``). A named function:
        exactly one call to it and nothing else. ``parallel_tool_calls=False``: at most one
        call (nothing after it).
        Every call's arguments follow that tool's ``parameters`` (a ``json_schema`` content, or
        an ``arguments`` content in the format's notation; checked first with
        ``check_parameters(schema, param)``, the grammar backend's check); a tool without
        parameters gets ``{}``.

        Raises:
            InvalidRequest: a malformed tool (param ``tools[i]``), a duplicate name, an
                unsupported parameters schema (``tools[i].function.parameters``), or a
                ``tool_choice`` that is unknown or names no given tool (``tool_choice``).
        """
        if not tools or tool_choice == "none":
            return None
        tags = {}
        for index, tool in enumerate(tools):
            function = function_of(tool, index)
            if function["name"] in tags:
                raise InvalidRequest(f"duplicate tool name {function['name']!r}", param=f"tools[{index}].function.name")
            parameters, param = parameters_of(function), f"tools[{index}].function.parameters"
            check_parameters(parameters, param)
            content: dict[str, Any] = {"type": "json_schema", "json_schema": parameters}
            if self.arguments is not None:
                content = {"type": "arguments", "syntax": asdict(self.arguments), "json_schema": parameters, "param": param}
            tags[function["name"]] = {"type": "tag", "begin": self._begin(function["name"]), "content": content, "end": self._end}
        if isinstance(tool_choice, dict):
            name = (tool_choice.get("function") or {}).get("name")
            if tool_choice.get("type") != "function" or name not in tags:
                raise InvalidRequest(f"tool_choice names no given function: {name!r}", param="tool_choice")
            return {"type": "structural_tag", "format": tags[name]}
        if tool_choice not in (None, "auto", "required"):
            raise InvalidRequest(f"unknown tool_choice {tool_choice!r}", param="tool_choice")
        if tool_choice == "required":
            return {
                "type": "structural_tag",
                "format": {
                    "type": "tags_with_separator",
                    "tags": list(tags.values()),
                    "separator": self.separator,
                    "at_least_one": True,
                    "stop_after_first": not parallel_tool_calls,
                },
            }
        return {
            "type": "structural_tag",
            "format": {
                "type": "triggered_tags",
                "triggers": [self.trigger],
                "tags": list(tags.values()),
                "stop_after_first": not parallel_tool_calls,
            },
        }

    def _begin(self, name: str) -> str:
        quoted = json.dumps(name, ensure_ascii=False)
        if self.begin is not None:
            return self.begin.replace("{name_json}", quoted).replace("{name}", name)
        return f'{self.prefix}{{"name": {quoted}, "{self.arguments_key}": '

    @property
    def _end(self) -> str:
        return self.end if self.begin is not None else "}" + self.suffix


def function_of(tool: Any, index: int) -> dict[str, Any]:
    """Return ``tool["function"]`` of an OpenAI function tool.

    Raises:
        InvalidRequest: the tool is not ``{"type": "function", "function": {"name": str}}``.
    """
    if (
        not isinstance(tool, dict)
        or tool.get("type") != "function"
        or not isinstance(tool.get("function"), dict)
        or not isinstance(tool["function"].get("name"), str)
    ):
        raise InvalidRequest("a tool must be {type: 'function', function: {name, ...}}", param=f"tools[{index}]")
    return tool["function"]


def parameters_of(function: dict[str, Any]) -> dict[str, Any]:
    """A function's ``parameters`` schema; :data:`~mcp_server.capability.schemas.NO_PARAMETERS`
    (only ``{}``) when it has none. The grammar and the final check both read it from here."""
    return function.get("parameters") or NO_PARAMETERS
