"""Grammar backends (SGLang's ``--grammar-backend``): what compiles a JSON Schema or a
structural tag into a grammar, and what masks the tokens it does not allow.

Both backends sit behind one small interface, so the engine, the scheduler and the
tool-call formats never name one:

* :class:`GrammarBackend`: ``compile_json_schema`` / ``compile_structural_tag`` give a
  compiled grammar (reused across requests: the engine caches it), ``matcher`` a fresh
  :class:`GrammarMatcher` for one sequence;
* :class:`GrammarMatcher`: ``fill_mask`` writes the allowed tokens into one row of an int32
  bitmask (``[B, ceil(V / 32)]``, bit ``j % 32`` of word ``j // 32`` for token ``j``, the
  layout both libraries use), ``accept`` advances by a token, ``is_terminated`` says the
  grammar has ended, ``forced_tokens`` gives the tokens the grammar forces next (the
  scheduler's jump-forward drafts).

Backends: :mod:`.llguidance_backend` (``llguidance``, the default: no torch, the widest
JSON Schema coverage, compiling bounded by its own limits) and
:mod:`.xgrammar_backend` (``xgrammar``; importing xgrammar imports torch, so it is loaded
only when chosen). A structural tag is xgrammar's JSON form of one (``{"type":
"structural_tag", "format": ...}`` with ``tag``, ``triggered_tags`` and
``tags_with_separator`` formats whose contents are ``{"type": "json_schema", "json_schema":
...}``); the llguidance backend translates it to its Lark dialect.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

import numpy as np

from mcp_server.families.arguments import ArgumentSyntax

__all__ = [
    "DEFAULT_GRAMMAR_BACKEND",
    "GRAMMAR_BACKENDS",
    "GrammarBackend",
    "GrammarMatcher",
    "allocate_bitmask",
    "fill_masks",
    "make_backend",
]

GRAMMAR_BACKENDS = ("llguidance", "xgrammar")
"""The names ``--grammar-backend`` takes (SGLang's)."""

DEFAULT_GRAMMAR_BACKEND = "llguidance"
"""The default: of JSONSchemaBench's 276-schema sample it refuses the fewest schemas, it never let
an invalid instance through, and its masks cost well under 5% of a decode step at 8 sequences
(``benchmarks/bench_grammar.py``; README, "Grammar backends")."""


class GrammarMatcher(Protocol):
    """One sequence's position in its grammar. Used from the scheduler thread only."""

    def fill_mask(self, bitmask: np.ndarray, row: int) -> None:
        """Write the tokens allowed next into ``bitmask[row]`` (int32 ``[B, ceil(V / 32)]``)."""
        ...

    def accept(self, token: int) -> bool:
        """Advance by ``token``; False when the grammar does not allow it (the matcher is then unusable)."""
        ...

    def is_terminated(self) -> bool:
        """True once the grammar has ended (its end-of-sequence token was accepted, or nothing may follow)."""
        ...

    def forced_tokens(self) -> list[int]:
        """Token ids of the text the grammar forces next (only one continuation is allowed),
        in the tokenizer's own tokenization, less a last token that a longer one could
        replace; [] when nothing is forced. Does not advance the matcher. Used as drafts
        (:mod:`...scheduler`): sampling still decides whether each is taken."""
        ...


class GrammarBackend(Protocol):
    """Compiles grammars for one tokenizer and makes matchers for them.

    Attributes:
        name: ``llguidance`` or ``xgrammar``.
        vocab: each token id's raw bytes (for log-probability entries).
    """

    name: str
    vocab: list[bytes]

    def compile_json_schema(self, schema: Any, param: str) -> Any:
        """Compile a JSON Schema (compact JSON output: separators ``,`` and ``:``, no other whitespace).

        Args:
            schema: a JSON Schema (dict or bool).
            param: the request field holding it, for errors.

        Raises:
            InvalidRequest: a keyword the backend cannot enforce (named, with its JSON Pointer
                where known), an invalid schema, or a compile failure; ``param`` is set.
        """
        ...

    def compile_structural_tag(self, tag: dict[str, Any], param: str) -> Any:
        """Compile a structural tag (see the module docstring).

        Raises:
            InvalidRequest: with ``param``, when the backend refuses it.
        """
        ...

    def check_json_schema(self, schema: Any, param: str) -> None:
        """Refuse a schema :meth:`compile_json_schema` would refuse (inside a structural tag).

        Raises:
            InvalidRequest: as :meth:`compile_json_schema`.
        """
        ...

    def matcher(self, compiled: Any) -> GrammarMatcher:
        """A fresh matcher at the start of a compiled grammar."""
        ...

    def compiles_arguments(self, syntax: ArgumentSyntax) -> bool:
        """Whether structural tags with ``arguments`` contents in ``syntax`` compile (tool-call
        arguments that are not one JSON object: XML-style, pythonic)."""
        ...

    def size_bytes(self, compiled: Any) -> int:
        """About how much memory a compiled grammar holds, for the cache's bound."""
        ...


def allocate_bitmask(rows: int, vocab_size: int) -> np.ndarray:
    """An int32 ``[rows, ceil(vocab_size / 32)]`` bitmask with every token allowed."""
    return np.full((rows, (vocab_size + 31) // 32), -1, dtype=np.int32)


def fill_masks(matchers: Iterable[tuple[GrammarMatcher, int]], bitmask: np.ndarray) -> None:
    """Fill the rows of ``bitmask`` of several matchers (all of one backend), as that backend
    fills a batch.

    Args:
        matchers: ``(matcher, row)`` pairs.
        bitmask: int32 ``[B, ceil(V / 32)]``, changed in place.
    """
    pairs = list(matchers)
    if pairs:
        type(pairs[0][0]).fill_batch(pairs, bitmask)


def make_backend(name: str, tokenizer: Any, vocab_size: int, eos_ids: Iterable[int], threads: int) -> GrammarBackend:
    """Build the backend ``name`` for a Hugging Face fast tokenizer.

    Args:
        name: one of :data:`GRAMMAR_BACKENDS`.
        tokenizer: the model's ``transformers`` fast tokenizer.
        vocab_size: the model's logits per row (may exceed the tokenizer's vocabulary).
        eos_ids: the tokens that end a sequence (allowed where the grammar may end).
        threads: threads for compiling (xgrammar) or for masks (llguidance).

    Raises:
        ValueError: an unknown name (the settings check names first).
    """
    if name == "llguidance":
        from mcp_server.engines.embedded.decoding.backends.llguidance_backend import LLGuidanceBackend

        return LLGuidanceBackend(tokenizer, vocab_size, eos_ids, threads)
    if name == "xgrammar":
        from mcp_server.engines.embedded.decoding.backends.xgrammar_backend import XGrammarBackend

        return XGrammarBackend(tokenizer, vocab_size, threads)
    raise ValueError(f"unknown grammar backend {name!r}; known: {list(GRAMMAR_BACKENDS)}")
