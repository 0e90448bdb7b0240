"""The family table: one :class:`ToolCallFormat` per chat-template family."""

from __future__ import annotations

from mcp_server.engines.embedded.decoding.toolcalls.format import ToolCallFormat

__all__ = ["FAMILIES"]

_HERMES_INSTRUCTIONS = """# Tools

You may call one or more functions to assist with the user query.

You are provided with function signatures within <tools></tools> XML tags:
<tools>
{tools}
</tools>

For each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:
<tool_call>
{{"name": <function-name>, "arguments": <args-json-object>}}
</tool_call>"""

_LLAMA3_INSTRUCTIONS = """Given the following functions, please respond with a JSON for a function call with its proper arguments that best answers the given prompt.

Respond in the format {{"name": function name, "parameters": dictionary of argument name and its value}}. Do not use variables.

{tools}"""

FAMILIES: dict[str, ToolCallFormat] = {
    "hermes": ToolCallFormat(
        name="hermes",
        prefix="<tool_call>\n",
        arguments_key="arguments",
        suffix="\n</tool_call>",
        trigger="<tool_call>",
        instructions=_HERMES_INSTRUCTIONS,
        result_role="user",
        result_open="<tool_response>\n",
        result_close="\n</tool_response>",
    ),
    "llama3": ToolCallFormat(
        name="llama3",
        prefix="",
        arguments_key="parameters",
        suffix="",
        trigger='{"name": ',
        instructions=_LLAMA3_INSTRUCTIONS,
        result_role="ipython",
    ),
}
"""Sources: Qwen2.5 / Hermes 2 Pro chat templates (hermes); Llama 3.1 model card (llama3)."""
