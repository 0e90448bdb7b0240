"""Render tools, assistant tool calls and tool results as plain chat messages.

For chat templates that ignore ``tools`` (SmolLM2's ChatML template prints only ``role`` and
``content``): the tool list becomes a system-prompt block in the family's format, assistant
``tool_calls`` become call text exactly as the grammar emits it, and ``tool`` messages become
result turns (Hermes: consecutive results merged into one ``user`` turn of
``<tool_response>`` blocks, as Qwen2.5's template does).
"""

from __future__ import annotations

import json
from typing import Any

from mcp_server.engines.embedded.decoding.toolcalls.format import (
    CALL_SEPARATOR,
    ToolCallFormat,
    function_of,
)

__all__ = ["render_messages", "with_tool_list"]


def render_messages(fmt: ToolCallFormat, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None) -> list[dict[str, str]]:
    """Return messages whose ``content`` is always a string and that carry no tool fields.

    Args:
        fmt: the family format.
        messages: OpenAI chat messages, normalized (:func:`mcp_server.protocol.content.normalize_messages`:
            content is None or a string for a model that reads text only).
        tools: OpenAI tool definitions, or None.

    Returns:
        ``[{"role", "content"}]``: the tool block is appended to the first system message
        (or sent as a new first system message).
    """
    rendered: list[dict[str, str]] = []
    for index, message in enumerate(messages):
        role, content = message["role"], message.get("content") or ""
        if role == "assistant" and message.get("tool_calls"):
            calls = [fmt.call_text(c["function"]["name"], c["function"]["arguments"]) for c in message["tool_calls"]]
            content = (content + CALL_SEPARATOR if content else "") + fmt.separator.join(calls)
        elif role == "tool":
            role, content = fmt.result_role, fmt.result_open + content + fmt.result_close
            if index > 0 and messages[index - 1]["role"] == "tool":
                rendered[-1]["content"] += "\n" + content
                continue
        rendered.append({"role": role, "content": content})
    return with_tool_list(fmt, rendered, tools)


def with_tool_list(fmt: ToolCallFormat, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    """``messages`` with the family's tool instructions (one JSON tool definition per line)
    appended to the first system message, or sent as a new first system message; unchanged
    without tools. Also for templates that render tool calls and results but not the tool
    list (DeepSeek V3.1's)."""
    if not tools:
        return messages
    block = fmt.instructions.format(tools="\n".join(json.dumps(t, ensure_ascii=False) for t in _functions(tools)))
    if messages and messages[0]["role"] == "system":
        return [{**messages[0], "content": (messages[0]["content"] or "") + "\n\n" + block}, *messages[1:]]
    return [{"role": "system", "content": block}, *messages]


def _functions(tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"type": "function", "function": function_of(tool, index)} for index, tool in enumerate(tools)]
