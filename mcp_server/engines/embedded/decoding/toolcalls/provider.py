"""The grammar provider the engine calls once per sequence."""

from __future__ import annotations

import json
from typing import Any

from mcp_server.engines.base import GenerationRequest
from mcp_server.engines.embedded.decoding.backends import GrammarBackend
from mcp_server.engines.embedded.decoding.constraints import compile_response_format
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
    """Callable ``(request, tokenizer) -> compiled grammar | None`` for the engine.

    With tools and ``tool_choice != "none"`` the grammar is the family's tool-call structural
    tag (None when the backend does not compile its arguments' notation: ``auto`` is then free
    text); otherwise it is the ``response_format`` grammar (None for plain text). Grammars are
    compiled by the grammar backend and cached (LRU) by the canonical JSON of what they
    depend on.

    Example::

        provider = GrammarProvider(make_backend("llguidance", tokenizer, vocab_size, eos_ids, 1), "hermes")
        # tool_call_format: a registry name, or a ToolCallFormat (one built from the family table)
        grammar = provider(request, tokenizer)

    Attributes:
        backend: the :class:`~mcp_server.engines.embedded.decoding.backends.GrammarBackend`.
        family: the tool-call format, for parsing and rendering.
        cache: the compiled-grammar cache.
    """

    def __init__(self, backend: GrammarBackend, tool_call_format: ToolCallFormat | str = "hermes", cache_size: int = 256):
        self.backend = backend
        self.family = tool_call_format if isinstance(tool_call_format, ToolCallFormat) else get_family(tool_call_format)
        self.cache = GrammarCache(cache_size, sizeof=backend.size_bytes)

    def __call__(self, request: GenerationRequest, tokenizer: Any = None) -> Any:
        """Return the grammar for ``request``; ``tokenizer`` is unused (the backend has it).

        Raises:
            InvalidRequest: an unsupported schema, a bad tool or ``tool_choice``.
        """
        if not request.tools or request.tool_choice == "none":
            return compile_response_format(self.backend, request.response_format, self.cache)
        if self.family.arguments is not None and not self.backend.compiles_arguments(self.family.arguments):
            return None  # tool_choice auto, unconstrained (required/named were refused before)
        key = json.dumps([request.tools, request.tool_choice, request.parallel_tool_calls], ensure_ascii=False)

        def build() -> Any:
            tag = self.family.constraint(
                request.tools, request.tool_choice, request.parallel_tool_calls, self.backend.check_json_schema
            )
            return self.backend.compile_structural_tag(tag, "tools")

        return self.cache.get("tools:" + key, build, "tools")
