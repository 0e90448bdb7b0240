"""The grammar provider the engine calls once per sequence."""

from __future__ import annotations

import json
from typing import Any

import xgrammar

from mcp_server.engines.base import GenerationRequest
from mcp_server.engines.embedded.decoding.constraints import (
    compile_response_format,
    reject_on_failure,
)
from mcp_server.engines.embedded.decoding.grammar_cache import GrammarCache
from mcp_server.engines.embedded.decoding.toolcalls.format import ToolCallFormat
from mcp_server.engines.embedded.decoding.toolcalls.registry import FAMILIES

__all__ = ["GrammarProvider", "get_family"]


def get_family(name: str) -> ToolCallFormat:
    """Return the registry entry ``name``.

    Raises:
        ValueError: unknown family (a start-up configuration error), naming the known ones.
    """
    if name not in FAMILIES:
        raise ValueError(f"unknown tool-call format {name!r}; known: {sorted(FAMILIES)}")
    return FAMILIES[name]


class GrammarProvider:
    """Callable ``(request, tokenizer) -> CompiledGrammar | None`` for the engine.

    With tools and ``tool_choice != "none"`` the grammar is the family's tool-call structural
    tag; otherwise it is the ``response_format`` grammar (None for plain text). Grammars are
    cached (LRU) by the canonical JSON of what they depend on.

    Example::

        provider = GrammarProvider(xgrammar.GrammarCompiler(tokenizer_info), tool_call_format="hermes")
        # tool_call_format: a registry name, or a ToolCallFormat (one built from the family table)
        grammar = provider(request, tokenizer)

    Attributes:
        family: the tool-call format, for parsing and rendering.
        cache: the compiled-grammar cache.
    """

    def __init__(
        self, compiler: xgrammar.GrammarCompiler, tool_call_format: ToolCallFormat | str = "hermes", cache_size: int = 256
    ):
        self.family = tool_call_format if isinstance(tool_call_format, ToolCallFormat) else get_family(tool_call_format)
        self.cache = GrammarCache(cache_size)
        self._compiler = compiler

    def __call__(self, request: GenerationRequest, tokenizer: Any = None) -> xgrammar.CompiledGrammar | None:
        """Return the grammar for ``request``; ``tokenizer`` is unused (the compiler has it).

        Raises:
            InvalidRequest: an unsupported schema, a bad tool or ``tool_choice``.
        """
        if not request.tools or request.tool_choice == "none":
            return compile_response_format(self._compiler, request.response_format, self.cache)
        key = json.dumps([request.tools, request.tool_choice, request.parallel_tool_calls], ensure_ascii=False)

        def build() -> xgrammar.CompiledGrammar:
            tag = self.family.constraint(request.tools, request.tool_choice, request.parallel_tool_calls)
            return reject_on_failure(lambda: self._compiler.compile_structural_tag(tag), "tools")

        return self.cache.get("tools:" + key, build, "tools")
