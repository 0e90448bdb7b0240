"""The ``xgrammar`` grammar backend (xgrammar 0.2.9). Importing xgrammar imports torch
(``xgrammar/matcher.py`` does, unconditionally), so this module is loaded only when
``--grammar-backend xgrammar`` is chosen; its masks are filled into the caller's numpy
bitmask through a zero-copy torch view.

JSON Schemas are first checked by :func:`..constraints.check_schema` (keywords xgrammar
ignores or mis-enforces are refused with 400 naming them) and compiled in strict mode with
compact separators (:data:`..constraints.XGRAMMAR_OPTIONS`).

An xgrammar compilation cannot be interrupted (some schemas take minutes and gigabytes), so
each one runs in a forked child process that is killed at the time limit: its core and its
memory come back at once. The grammar comes back serialized (``CompiledGrammar.serialize_json``).
A fork copies nothing up front (pages are shared until written) and costs milliseconds.
"""

from __future__ import annotations

import functools
import json
import multiprocessing
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import torch
import xgrammar

from mcp_server.engines.embedded.decoding.constraints import (
    XGRAMMAR_OPTIONS,
    check_schema,
    reject_on_failure,
    schema_ebnf,
)
from mcp_server.engines.embedded.decoding.grammar_cache import COMPILE_TIMEOUT
from mcp_server.errors import InvalidRequest
from mcp_server.families.arguments import ArgumentSyntax

__all__ = ["XGrammarBackend", "XGrammarMatcher"]


class XGrammarMatcher:
    """An ``xgrammar.GrammarMatcher`` behind the :class:`.GrammarMatcher` interface.

    Args:
        compiled: the grammar.
        encode: text -> token ids, without special tokens (the tokenizer's), for
            :meth:`forced_tokens`.
    """

    def __init__(self, compiled: xgrammar.CompiledGrammar, encode: Callable[[str], list[int]]):
        self._matcher = xgrammar.GrammarMatcher(compiled)
        self._encode = encode

    def fill_mask(self, bitmask: np.ndarray, row: int) -> None:
        """See :class:`.GrammarMatcher`."""
        self._matcher.fill_next_token_bitmask(torch.from_numpy(bitmask), row)

    @classmethod
    def fill_batch(cls, pairs: Iterable[tuple[XGrammarMatcher, int]], bitmask: np.ndarray) -> None:
        """Fill several rows, one after the other (see :func:`.fill_masks`)."""
        view = torch.from_numpy(bitmask)
        for matcher, row in pairs:
            matcher._matcher.fill_next_token_bitmask(view, row)

    def accept(self, token: int) -> bool:
        """See :class:`.GrammarMatcher`."""
        return self._matcher.accept_token(token)

    def is_terminated(self) -> bool:
        """See :class:`.GrammarMatcher`."""
        return self._matcher.is_terminated()

    def forced_tokens(self) -> list[int]:
        """See :class:`.GrammarMatcher`: ``find_jump_forward_string`` tokenized, less its last
        token (the text after it may merge with it into a longer token)."""
        forced = self._matcher.find_jump_forward_string()
        return self._encode(forced)[:-1] if forced else []


class XGrammarBackend:
    """xgrammar's compiler for one tokenizer (see :class:`.GrammarBackend`).

    Args:
        tokenizer: a ``transformers`` fast tokenizer.
        vocab_size: logits per row.
        threads: the compiler's threads.
        compile_timeout: seconds before a compilation's child process is killed (400).

    Attributes:
        compiler: the ``xgrammar.GrammarCompiler`` (its own cache off: the engine's
            :class:`..grammar_cache.GrammarCache` is the one cache, bounded).
        tokenizer_info: its ``xgrammar.TokenizerInfo``.
    """

    name = "xgrammar"

    def __init__(self, tokenizer: Any, vocab_size: int, threads: int = 1, compile_timeout: float = COMPILE_TIMEOUT):
        self.compile_timeout = compile_timeout
        self.tokenizer_info = xgrammar.TokenizerInfo.from_huggingface(tokenizer, vocab_size=vocab_size)
        self._encode = functools.partial(tokenizer.encode, add_special_tokens=False)
        self.compiler = xgrammar.GrammarCompiler(self.tokenizer_info, max_threads=threads, cache_enabled=False)
        self.vocab = [bytes(token) for token in self.tokenizer_info.decoded_vocab]

    def check_json_schema(self, schema: Any, param: str) -> None:
        """See :class:`.GrammarBackend`."""
        check_schema(schema, param)

    def compile_json_schema(self, schema: Any, param: str) -> xgrammar.CompiledGrammar:
        """See :class:`.GrammarBackend`."""
        check_schema(schema, param)
        text = json.dumps(schema, separators=(",", ":"), ensure_ascii=False)
        return self._in_child(lambda: self.compiler.compile_json_schema(text, **XGRAMMAR_OPTIONS), param)

    def compile_structural_tag(self, tag: dict[str, Any], param: str) -> xgrammar.CompiledGrammar:
        """See :class:`.GrammarBackend`; JSON Schema contents become EBNF with our options."""
        text = json.dumps(_with_ebnf(tag, param), ensure_ascii=False)
        return self._in_child(lambda: self.compiler.compile_structural_tag(text), param)

    def _in_child(self, compile_grammar: Callable[[], xgrammar.CompiledGrammar], param: str) -> xgrammar.CompiledGrammar:
        """Run ``compile_grammar`` in a forked child; kill it at ``compile_timeout``.

        Raises:
            InvalidRequest: the compiler refused (its message), or the time limit passed.
        """
        context = multiprocessing.get_context("fork")
        receive, send = context.Pipe(duplex=False)
        child = context.Process(target=_compile_and_send, args=(compile_grammar, param, send), daemon=True)
        child.start()
        send.close()
        try:
            if not receive.poll(self.compile_timeout):
                raise InvalidRequest(
                    f"The grammar for {param} took longer than {self.compile_timeout:g} s to compile; "
                    "simplify the schema (fewer or simpler 'pattern's, fewer properties).",
                    param=param,
                )
            try:
                compiled, refusal = receive.recv()
            except EOFError:
                raise InvalidRequest(f"The grammar compiler failed on {param}.", param=param) from None
        finally:
            if child.is_alive():
                child.kill()
            child.join()
            receive.close()
        if refusal is not None:
            raise InvalidRequest(refusal, param=param)
        return xgrammar.CompiledGrammar.deserialize_json(compiled, self.tokenizer_info)

    def matcher(self, compiled: xgrammar.CompiledGrammar) -> XGrammarMatcher:
        """See :class:`.GrammarBackend`."""
        return XGrammarMatcher(compiled, self._encode)

    @staticmethod
    def compiles_arguments(syntax: ArgumentSyntax) -> bool:
        """See :class:`.GrammarBackend`: the notations xgrammar has a ``JSONSchemaFormat``
        style for (:attr:`ArgumentSyntax.xgrammar_style`: XML-style and Gemma 4, not pythonic)."""
        return syntax.xgrammar_style is not None

    @staticmethod
    def size_bytes(compiled: xgrammar.CompiledGrammar) -> int:
        """``CompiledGrammar.memory_size_bytes``."""
        return compiled.memory_size_bytes


def _compile_and_send(compile_grammar: Callable[[], xgrammar.CompiledGrammar], param: str, send: Any) -> None:
    """The child's work: compile, then send ``(serialized grammar, None)`` or ``(None, refusal message)``."""
    try:
        send.send((reject_on_failure(compile_grammar, param).serialize_json(), None))
    except InvalidRequest as exc:
        send.send((None, exc.message))


def _unenforced_length(schema: Any) -> str | None:
    """``minLength`` or ``maxLength`` anywhere in ``schema``: xgrammar 0.2.9's XML and Gemma
    styles write string values as raw text and do not bound their length (measured: a
    ``glm_xml`` value passed ``maxLength``)."""
    if isinstance(schema, list):
        return next((k for item in schema if (k := _unenforced_length(item))), None)
    if not isinstance(schema, dict):
        return None
    if found := next((k for k in ("minLength", "maxLength") if k in schema), None):
        return found
    return next((k for value in schema.values() if (k := _unenforced_length(value))), None)


def _with_ebnf(node: Any, param: str) -> Any:
    """A copy of a structural tag whose ``json_schema`` contents are ``grammar`` (EBNF) contents
    and whose ``arguments`` contents are ``json_schema`` contents in their xgrammar style."""
    if isinstance(node, list):
        return [_with_ebnf(item, param) for item in node]
    if not isinstance(node, dict):
        return node
    if node.get("type") == "json_schema":
        return {"type": "grammar", "grammar": schema_ebnf(node["json_schema"], param)}
    if node.get("type") == "arguments":  # xgrammar writes the notation itself (its whitespace rules)
        if keyword := _unenforced_length(node["json_schema"]):
            raise InvalidRequest(
                f"JSON Schema keyword '{keyword}' is not supported by the xgrammar backend in "
                f"{node['syntax']['xgrammar_style']} tool-call arguments (it is not enforced there); "
                "use --grammar-backend llguidance",
                param=node["param"],
            )
        return {"type": "json_schema", "json_schema": node["json_schema"], "style": node["syntax"]["xgrammar_style"]}
    return {key: _with_ebnf(value, param) for key, value in node.items()}
