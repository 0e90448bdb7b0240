"""The ``llguidance`` grammar backend (llguidance >= 1.9; Rust, no torch).

* Tokenizer: one ``LLTokenizer`` per engine, built once from the Hugging Face fast
  tokenizer (about a second; building it per grammar or per request is what made an
  earlier measurement cost milliseconds per token).
* JSON Schemas: ``LLMatcher.grammar_from_json_schema`` with compact separators and no
  free whitespace, not lenient (a keyword it cannot enforce is an error, which we return
  as 400 naming the keyword). A compiled grammar is a validated matcher at its start;
  each sequence gets a ``deep_copy`` of it, so nothing is compiled per request.
* Structural tags (tool calls): translated to llguidance's Lark dialect, the JSON
  arguments as ``%json`` with the same options; free text before a call is a lexeme that
  cannot contain the trigger (so a trigger always starts a call).
* Masks: written straight into the caller's numpy bitmask, row by row. A sequence's first
  masks build lexer states lazily (milliseconds); the states are shared by every copy of
  the compiled grammar, so later requests with the same schema find them built (measured:
  a fresh matcher per request averaged 0.47 ms a token, its first mask 14.6 ms; a copy of
  a used grammar 0.012 ms).
* Bounds: llguidance limits the work of building a grammar and of each mask (its
  ``LLParserLimits`` fuel); a grammar past them is an error, never a stall.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

import llguidance
import llguidance.hf
import llguidance.numpy
import numpy as np

from mcp_server.engines.embedded.decoding.backends.lark_arguments import arguments_lark, lark_literal, regex_literal
from mcp_server.engines.embedded.decoding.constraints import check_schema
from mcp_server.errors import InvalidRequest
from mcp_server.families.arguments import ArgumentSyntax

__all__ = ["JSON_OPTIONS", "LLGuidanceBackend", "LLGuidanceMatcher", "strict", "structural_tag_lark"]

JSON_OPTIONS = {"whitespace_flexible": False, "item_separator": ",", "key_separator": ":", "lenient": False}
"""llguidance's JSON options: compact output (the same text the xgrammar backend emits)."""

_UNIMPLEMENTED = re.compile(r"Unimplemented keys: \[([^\]]*)\]")
_KEYWORD = re.compile(
    r"\b(oneOf|anyOf|allOf|not|if|then|else|dependencies|dependentSchemas|dependentRequired|patternProperties"
    r"|propertyNames|contains|uniqueItems|unevaluatedProperties|unevaluatedItems|multipleOf|pattern|format"
    r"|minLength|maxLength|minItems|maxItems|additionalProperties|\$ref)\b"
)


class LLGuidanceMatcher:
    """An ``llguidance.LLMatcher`` behind the :class:`.GrammarMatcher` interface.

    Terminated means an end-of-sequence token was accepted, as in xgrammar: llguidance
    stops as soon as nothing but the end may follow, and the token that got it there is
    still text to show.
    """

    def __init__(self, matcher: llguidance.LLMatcher, eos_ids: frozenset[int]):
        self._matcher = matcher
        self._eos_ids = eos_ids
        self._ended = False

    def fill_mask(self, bitmask: np.ndarray, row: int) -> None:
        """See :class:`.GrammarMatcher`."""
        llguidance.numpy.fill_next_token_bitmask(self._matcher, bitmask, row)

    @classmethod
    def fill_batch(cls, pairs: Iterable[tuple[LLGuidanceMatcher, int]], bitmask: np.ndarray) -> None:
        """Fill several rows, one after the other (see :func:`.fill_masks`).

        Not on llguidance's thread pool (``LLExecutor``): with 8 rows on a busy 2-core machine
        waking its threads cost more than the masks (median 1.6-2.2 ms a step against
        0.2-0.3 ms in turn, warm grammars).
        """
        for matcher, row in pairs:
            llguidance.numpy.fill_next_token_bitmask(matcher._matcher, bitmask, row)

    def accept(self, token: int) -> bool:
        """See :class:`.GrammarMatcher`."""
        self._ended = token in self._eos_ids
        return self._matcher.consume_token(token) and not self._matcher.is_error()

    def is_terminated(self) -> bool:
        """See :class:`.GrammarMatcher`."""
        return self._ended and self._matcher.is_stopped()

    def forced_tokens(self) -> list[int]:
        """See :class:`.GrammarMatcher`: ``LLMatcher.compute_ff_tokens`` (llguidance tokenizes
        the forced bytes and drops a last token that could be extended)."""
        return [] if self._matcher.is_stopped() else self._matcher.compute_ff_tokens()


class LLGuidanceBackend:
    """llguidance for one tokenizer (see :class:`.GrammarBackend`).

    Args:
        tokenizer: a ``transformers`` fast tokenizer.
        vocab_size: logits per row (the mask's width; ids past the tokenizer's are never allowed).
        eos_ids: the tokens that end a sequence; llguidance allows them where the grammar may end.
        threads: unused (the mask executor sizes itself); kept for one signature with xgrammar.

    Attributes:
        tokenizer: the ``llguidance.LLTokenizer``.
    """

    name = "llguidance"

    def __init__(self, tokenizer: Any, vocab_size: int, eos_ids: Iterable[int], threads: int = 1):
        self._eos_ids = frozenset(eos_ids)
        # Built from the tokenizer's JSON once, to read each token's bytes and which are special;
        # the one kept holds only that table (and calls back into ``tokenizer`` to encode):
        # 27 MB less than keeping llguidance's own copy of the Hugging Face tokenizer.
        full = llguidance.hf.from_tokenizer(tokenizer, n_vocab=vocab_size, eos_token=sorted(self._eos_ids), slices=[])
        self.vocab = [full.decode_bytes([i]) for i in range(vocab_size)]
        special = [i for i in range(vocab_size) if full.is_special_token(i)]
        del full
        table = _TokenTable(self.vocab, special, tokenizer)
        self.tokenizer = llguidance.LLTokenizer(
            llguidance.TokenizerWrapper(table), n_vocab=vocab_size, eos_token=sorted(self._eos_ids)
        )

    def check_json_schema(self, schema: Any, param: str) -> None:
        """See :class:`.GrammarBackend`."""
        self.compile_json_schema(schema, param)

    def compile_json_schema(self, schema: Any, param: str) -> llguidance.LLMatcher:
        """See :class:`.GrammarBackend`."""
        check_schema(schema, param, xgrammar_rules=False)
        try:
            grammar = llguidance.LLMatcher.grammar_from_json_schema(_dumps(strict(schema)), defaults=JSON_OPTIONS)
        except ValueError as exc:
            raise InvalidRequest(f"JSON Schema cannot be compiled to a grammar: {exc}", param=param) from None
        return self._compile(grammar, param)

    def compile_structural_tag(self, tag: dict[str, Any], param: str) -> llguidance.LLMatcher:
        """See :class:`.GrammarBackend`."""
        return self._compile(structural_tag_lark(tag), param)

    def matcher(self, compiled: llguidance.LLMatcher) -> LLGuidanceMatcher:
        """See :class:`.GrammarBackend`."""
        return LLGuidanceMatcher(compiled.deep_copy(), self._eos_ids)

    @staticmethod
    def compiles_arguments(syntax: ArgumentSyntax) -> bool:
        """See :class:`.GrammarBackend`: every notation (:mod:`.lark_arguments`)."""
        return True

    @staticmethod
    def size_bytes(compiled: llguidance.LLMatcher) -> int:
        """A flat estimate (llguidance does not report it): 64 KB per grammar."""
        return 64 * 1024

    def _compile(self, grammar: str, param: str) -> llguidance.LLMatcher:
        matcher = llguidance.LLMatcher(self.tokenizer, grammar, log_level=0)
        if matcher.is_error():
            raise _refusal(matcher.get_error(), param)
        return matcher


class _TokenTable:
    """What ``llguidance.TokenizerWrapper`` reads: token bytes, special ids, and an encoder."""

    def __init__(self, tokens: list[bytes], special: list[int], tokenizer: Any):
        self.tokens = tokens
        self.special_token_ids = special
        self.eos_token_id = tokenizer.eos_token_id
        self.bos_token_id = tokenizer.bos_token_id
        self._tokenizer = tokenizer

    def __call__(self, text: str) -> list[int]:
        return self._tokenizer.encode(text, add_special_tokens=False)


def structural_tag_lark(tag: dict[str, Any]) -> str:
    """Translate a structural tag (the formats the tool-call families use) to llguidance Lark.

    Supported formats: ``tag`` (begin, content, end), ``tags_with_separator`` and
    ``triggered_tags`` (one trigger, or several), with ``json_schema`` contents or ``arguments``
    contents (:mod:`.lark_arguments`: notations that are not one JSON object). Semantics as
    xgrammar's: ``at_least_one`` (at least one tag), ``stop_after_first`` (the grammar ends
    after the first tag); in ``triggered_tags`` any text may come before, between and after
    the tags, and a trigger in the text always starts one of the tags.

    Raises:
        InvalidRequest: another format (param ``tools``).
    """
    rules: list[str] = []
    fmt = tag.get("format", tag)
    kind = fmt.get("type")
    if kind == "tag":
        start = _tag_rule(fmt, "", rules, 0)
    elif kind == "tags_with_separator":
        choice = " | ".join(_tag_rule(t, "", rules, i) for i, t in enumerate(fmt["tags"]))
        rules.append(f"call: {choice}")
        repeat = "" if fmt.get("stop_after_first") else f" ({lark_literal(fmt['separator'])} call)*"
        start = f"call{repeat}" if fmt.get("at_least_one") else f"(call{repeat})?"
    elif kind == "triggered_tags":
        triggers = fmt["triggers"]
        for t_index, trigger in enumerate(triggers):
            tags = [(i, t) for i, t in enumerate(fmt["tags"]) if t["begin"].startswith(trigger)]
            choice = " | ".join(_tag_rule(t, trigger, rules, i) for i, t in tags)
            # A lazy lexeme ends at the trigger's first appearance (llguidance's form for tool calls).
            rules.append(f"call_{t_index}_trigger[lazy]: TEXT {lark_literal(trigger)}")
            rules.append(f"call_{t_index}: call_{t_index}_trigger ({choice})")
        calls = " | ".join(f"call_{i}" for i in range(len(triggers)))
        excluded = "|".join(regex_literal(t) for t in triggers)
        rules.append(f"TEXT: /(.|\\n)*/ & ~/(.|\\n)*({excluded})(.|\\n)*/")
        if fmt.get("stop_after_first"):
            start = f"({calls})" if fmt.get("at_least_one") else f"TEXT | ({calls})"
        else:
            start = f"({calls})+ TEXT" if fmt.get("at_least_one") else f"({calls})* TEXT"
    else:
        raise InvalidRequest(f"structural tag format {kind!r} is not supported by llguidance", param="tools")
    return "%llguidance {}\n" + f"start: {start}\n" + "\n".join(rules) + "\n"


def _tag_rule(tag: dict[str, Any], trigger: str, rules: list[str], index: int) -> str:
    """Add the rule of one ``tag`` (its begin less ``trigger``, content, end); return its name."""
    content = tag["content"]
    name = f"tag_{index}"
    if content.get("type") == "json_schema":
        arguments = _json_value(content["json_schema"])
    elif content.get("type") == "arguments":
        arguments = arguments_lark(content, f"{name}_", rules, _json_value)
    else:
        raise InvalidRequest(f"structural tag content {content.get('type')!r} is not supported by llguidance", param="tools")
    end = tag["end"] if isinstance(tag["end"], str) else tag["end"][0]
    parts = [lark_literal(tag["begin"][len(trigger) :]), arguments, lark_literal(end)]
    rules.append(f"{name}: " + " ".join(p for p in parts if p))
    return name


def _json_value(schema: Any) -> str:
    """``%json`` of ``schema``, strict, with :data:`JSON_OPTIONS`."""
    schema = strict(schema)
    return f"%json {_dumps({**schema, 'x-guidance': JSON_OPTIONS} if isinstance(schema, dict) else schema)}"


_OPEN_KEYS = frozenset({"additionalProperties", "patternProperties", "unevaluatedProperties", "$ref", "allOf",
                        "anyOf", "oneOf"})
"""A node with one of these keys is not closed by :func:`strict`."""


def strict(schema: Any) -> Any:
    """A copy of ``schema`` in which objects allow no undeclared properties unless the schema
    says so (``additionalProperties: false`` where no ``additionalProperties``,
    ``patternProperties`` or ``unevaluatedProperties`` is given, no ``$ref``, ``allOf``, ``anyOf``
    or ``oneOf`` may declare more, and every ``required`` name is declared in its own
    ``properties``): xgrammar's ``strict_mode``
    and OpenAI's strict mode, which the README promises for both backends. Output stays
    valid (a subset of what the schema allows); a small model no longer wanders into
    properties nobody asked for. A double negation (``{"not": {"not": S}}``) becomes ``S``,
    which means the same and needs no ``not``."""
    if isinstance(schema, list):
        return [strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    node = {key: strict(value) for key, value in schema.items()}
    while isinstance(negated := node.get("not"), dict) and negated.keys() == {"not"}:
        # not(not(S)) is S: llguidance enforces no 'not', but this one needs none (JSONSchemaBench
        # writes allOf: [A, {not: {not: B}}]); with siblings, S joins their 'allOf'.
        del node["not"]
        if not node:
            return negated["not"]
        node["allOf"] = [*node.get("allOf", []), negated["not"]]
    is_object = "properties" in node or node.get("type") == "object"
    # Properties may be declared elsewhere: by a $ref or a branch beside this node, or only by
    # 'required'; those objects stay open (closing them made valid schemas unsatisfiable).
    declared = set(node.get("required", [])) <= set(node.get("properties", {})) and not _OPEN_KEYS & node.keys()
    if is_object and declared:
        node["additionalProperties"] = False
    return node


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _refusal(error: str, param: str) -> InvalidRequest:
    """A 400 for an llguidance error, naming the keyword: one it reports as unimplemented, else
    the first JSON Schema keyword its message mentions (``Unknown format`` names ``format``)."""
    first = error.strip().splitlines()[0] if error.strip() else "unknown error"
    keyword = None
    if match := _UNIMPLEMENTED.search(error):
        keyword = next((k.strip().strip('"') for k in match.group(1).split(",") if k.strip()), None)
    if keyword is None and (mentioned := _KEYWORD.search(first)):
        keyword = mentioned.group(1)
    if keyword is None and "Unknown format" in first:
        keyword = "format"
    if keyword is not None:
        return InvalidRequest(f"JSON Schema keyword '{keyword}' is not supported by constrained decoding ({first})", param=param)
    return InvalidRequest(f"JSON Schema cannot be compiled to a grammar: {first}", param=param)
