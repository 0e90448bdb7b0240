"""Tool calling per chat-template family: grammar constraint and prompt rendering (parsing is
the family table's: :mod:`mcp_server.families`).

The registry is the one table :data:`FAMILIES`; each entry is a
:class:`~mcp_server.engines.embedded.decoding.toolcalls.format.ToolCallFormat` and provides ``constraint(tools,
tool_choice, parallel_tool_calls, check_parameters)``; :func:`render_messages` takes the entry. :class:`GrammarProvider` is what the engine calls to
get a request's grammar.

Formats: ``hermes`` - ``<tool_call>\\n{"name": ..., "arguments": {...}}\\n</tool_call>``
(Hermes 2 Pro, Qwen2.5/Qwen3, SmolLM-style templates; the same text as xgrammar's ``qwen_3``
structural tag). ``llama3`` - ``{"name": ..., "parameters": {...}}`` (Llama 3.1 JSON tool
calling, model card "JSON based tool calling"; xgrammar's ``llama`` structural tag).
"""

from __future__ import annotations

from mcp_server.engines.embedded.decoding.toolcalls.format import ToolCallFormat
from mcp_server.engines.embedded.decoding.toolcalls.provider import (
    GrammarProvider,
    get_family,
)
from mcp_server.engines.embedded.decoding.toolcalls.registry import FAMILIES
from mcp_server.engines.embedded.decoding.toolcalls.render import render_messages, with_tool_list

__all__ = [
    "FAMILIES",
    "GrammarProvider",
    "ToolCallFormat",
    "get_family",
    "render_messages",
    "with_tool_list",
]
