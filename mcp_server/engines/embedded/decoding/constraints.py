"""``response_format`` and JSON Schemas -> grammars, plus the final output check.

The engine constrains decoding with a grammar (:mod:`.backends`) so that output is valid by
construction. This module owns the JSON Schema side of that:

* :func:`check_schema` rejects schemas whose meaning the grammar cannot enforce, naming the
  keyword and its JSON Pointer in the schema: the backend-independent rules (nesting,
  meta-schema, patterns, ``const``/``enum``), and those of xgrammar 0.2.9 for the
  ``xgrammar`` backend (the ``llguidance`` backend reports the keywords it cannot enforce
  itself);
* :func:`compile_response_format` turns an OpenAI ``response_format`` into a compiled
  grammar of the chosen backend (cached in a bounded :class:`~.grammar_cache.GrammarCache`);
* :func:`schema_ebnf` gives the same grammar as xgrammar EBNF text, for embedding tool
  arguments in an xgrammar structural tag (:mod:`.backends.xgrammar_backend`);
* :func:`validate_output` re-checks finished output with ``jsonschema``, so a sequence that
  stops without matching its schema is never reported as a success.

Defined behaviour per keyword (measured against xgrammar 0.2.9; see ``tests/test_constraints.py``):

* enforced by the grammar: ``type``, ``properties``, ``required`` (names declared in
  ``properties``), ``additionalProperties`` (bool or schema; undeclared properties come after
  the declared ones), ``items`` (one schema), ``prefixItems``, ``minItems``/``maxItems``,
  ``minLength``/``maxLength``, ``minimum``/``maximum``/``exclusiveMinimum``/``exclusiveMaximum``
  (numbers), ``minProperties``/``maxProperties``, ``enum``, ``const``, ``anyOf``, a one-element
  ``allOf``, local ``$ref`` (``#`` or ``#/...`` pointers, recursion included) into
  ``$defs``/``definitions``, ``multipleOf`` on ``integer`` with an integer value, ``pattern``
  (matched against the whole string, as if anchored), and the string ``format`` values in
  :data:`SUPPORTED_FORMATS`;
* ``oneOf`` is compiled as ``anyOf``; exclusivity is checked by :func:`validate_output`;
* rejected with :class:`~mcp_server.errors.InvalidRequest`: the keywords in :data:`UNSUPPORTED`,
  ``uniqueItems: true``, other ``multipleOf``, ``multipleOf`` with a range,
  ``minLength``/``maxLength`` with ``pattern`` or ``format`` (xgrammar drops them),
  ``allOf`` with several schemas, tuple ``items``,
  ``required`` names missing from ``properties``, non-local or dangling ``$ref``, ``$ref`` with
  sibling assertions, other string ``format`` values, patterns that the grammar and the final
  check would read differently or that either refuses (:mod:`.patterns`: ``\\Z``, lookaround,
  backreferences, ``\\p{..}``, ``\\b``, literal control characters, ...), a ``const``/``enum``
  value that its sibling keywords refuse, schemas nesting deeper than
  :data:`~.nesting.MAX_SCHEMA_NESTING` levels (:mod:`.nesting`), schemas that fail their
  meta-schema, and anything else the compiler refuses;
* properties or items the schema does not declare are never emitted unless
  ``additionalProperties``/``items`` allow them explicitly (xgrammar ``strict_mode``, as in
  OpenAI's strict mode and SGLang): output stays valid, and compiling is fast (measured on
  JSONSchemaBench: 10 s instead of 20 ms for some schemas with ``strict_mode=False``);
* ignored as annotations (as JSON Schema 2020-12 does): ``title``, ``description``,
  ``default``, ``examples``, unknown keywords, and ``format`` on non-string types (OpenAPI
  ``int32``, ``float``, ...).

Output is compact JSON (separators :data:`JSON_SEPARATORS`, no other whitespace): with
xgrammar's default whitespace a small model pads JSON with newlines (docs/architecture.md), and
compact separators are also what xgrammar uses for ``enum``/``const`` values.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import jsonschema

from mcp_server.engines.embedded.decoding.nesting import (
    MAX_SCHEMA_NESTING,
    SCHEMA_LISTS,
    SCHEMA_VALUES,
    check_nesting,
    resolve_ref,
)
from mcp_server.engines.embedded.decoding.patterns import PatternError, compile_pattern, re2_validator_for
from mcp_server.errors import InvalidRequest, ServiceError

if TYPE_CHECKING:
    from mcp_server.engines.embedded.decoding.backends import GrammarBackend
    from mcp_server.engines.embedded.decoding.grammar_cache import GrammarCache

__all__ = [
    "JSON_SEPARATORS",
    "MAX_OUTPUT_DEPTH",
    "MAX_SCHEMA_NESTING",
    "SCHEMA_PARAM",
    "SUPPORTED_FORMATS",
    "UNSUPPORTED",
    "XGRAMMAR_OPTIONS",
    "check_schema",
    "compile_response_format",
    "reject_on_failure",
    "schema_ebnf",
    "validate_output",
]

JSON_SEPARATORS = (",", ":")
SCHEMA_PARAM = "response_format.json_schema.schema"

UNSUPPORTED = frozenset({
    "$dynamicRef", "$recursiveRef", "additionalItems", "contains", "dependencies",
    "dependentRequired", "dependentSchemas", "else", "if", "maxContains", "minContains", "not",
    "patternProperties", "propertyNames", "then", "unevaluatedItems", "unevaluatedProperties",
})  # fmt: skip
"""Keywords xgrammar 0.2.9 ignores or mis-enforces; a schema using any of them is rejected."""

MAX_OUTPUT_DEPTH = 64
"""Levels of arrays and objects a JSON answer may nest for :func:`validate_output` to check it."""

SUPPORTED_FORMATS = frozenset({
    "date", "date-time", "duration", "email", "hostname", "ipv4", "ipv6", "json-pointer",
    "relative-json-pointer", "time", "uri", "uri-reference", "uri-template", "uuid",
})  # fmt: skip
"""String formats xgrammar 0.2.9 enforces (others, e.g. ``idn-email``, ``iri``, are ignored by it)."""

_ASSERTIONS = frozenset({
    "type", "enum", "const", "properties", "required", "additionalProperties", "items",
    "prefixItems", "minItems", "maxItems", "uniqueItems", "minLength", "maxLength", "pattern",
    "format", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf",
    "minProperties", "maxProperties", "anyOf", "oneOf", "allOf",
}) | UNSUPPORTED  # fmt: skip
_RANGE = frozenset({"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"})
_SCHEMA_MAPS = ("properties", "$defs", "definitions")
_META_FORMATS = jsonschema.FormatChecker([f for f in jsonschema.FormatChecker.checkers if f != "regex"])
"""Formats the meta-schema check asserts: all but ``regex`` (Python's ``re``; patterns are
checked by :mod:`.patterns` instead)."""
XGRAMMAR_OPTIONS = {"any_whitespace": False, "separators": JSON_SEPARATORS, "strict_mode": True}
"""xgrammar's JSON Schema options: compact output, and no properties or items the schema does not declare."""
_XGRAMMAR_LOCATION = re.compile(r"^\[[^\]]*\]\s*\S+:\d+:\s*")


def check_schema(schema: Any, param: str = SCHEMA_PARAM, xgrammar_rules: bool = True) -> None:
    """Reject a JSON Schema the grammar backend cannot enforce exactly.

    The schema's nesting is bounded first (:data:`MAX_SCHEMA_NESTING` subschema levels,
    ``$ref`` chains followed), then it is checked against its meta-schema (``$schema``,
    default 2020-12; ``pattern`` values by this module's own rules), then walked through
    every subschema position (not following ``$ref``, so recursion is safe). A ``const`` or
    ``enum`` must satisfy its sibling keywords (the grammar emits the value as it is).

    Args:
        schema: a JSON Schema (dict or bool).
        param: the request field holding it, used as the error's ``param``.
        xgrammar_rules: also refuse what xgrammar 0.2.9 cannot enforce (the module
            docstring's list); False for the llguidance backend, which reports the keywords
            it cannot enforce itself: then only the backend-independent rules apply (nesting,
            meta-schema, patterns both readings share, ``const``/``enum`` against their
            siblings, local ``$ref`` s).

    Raises:
        InvalidRequest: naming the keyword and its JSON Pointer in the schema.
    """
    try:
        check_nesting(schema, param)
        jsonschema.validators.validator_for(schema).check_schema(schema, format_checker=_META_FORMATS)
        _check_node(schema, "", schema, param, xgrammar_rules)
    except jsonschema.SchemaError as exc:
        pointer = "".join(f"/{p}" for p in exc.path)
        raise InvalidRequest(f"invalid JSON Schema at '{pointer or '/'}': {exc.message}", param=param) from None
    except RecursionError:
        raise InvalidRequest(f"the JSON Schema nests too deeply (at most {MAX_SCHEMA_NESTING} levels)",
                             param=param) from None


def schema_ebnf(schema: Any, param: str) -> str:
    """Check a schema and convert it to xgrammar EBNF (root rule ``root``), compact JSON.

    Args:
        schema: a JSON Schema (dict or bool).
        param: the request field holding the schema, for errors.

    Returns:
        EBNF text, e.g. for a ``GrammarFormat`` inside a structural tag.

    Raises:
        InvalidRequest: the schema is unsupported or does not compile.
    """
    import xgrammar

    check_schema(schema, param)
    return str(reject_on_failure(lambda: xgrammar.Grammar.from_json_schema(_dumps(schema), **XGRAMMAR_OPTIONS), param))


def compile_response_format(
    backend: GrammarBackend, response_format: dict[str, Any] | None, cache: GrammarCache
) -> Any:
    """Compile an OpenAI ``response_format`` into a grammar of ``backend`` (None for text).

    ``text`` or None: no grammar. ``json_object``: any JSON object. ``json_schema``: the
    schema in ``json_schema.schema`` (missing: any JSON value); ``json_schema.strict`` changes
    nothing, the grammar always follows the schema (source: OpenAI "Structured Outputs" guide).

    Raises:
        InvalidRequest: unknown ``type`` (param ``response_format.type``) or a schema that
            :func:`check_schema` rejects or that does not compile.
    """
    kind = (response_format or {}).get("type", "text")
    if kind == "text":
        return None
    if kind == "json_object":
        schema: Any = {"type": "object"}
    elif kind == "json_schema":
        schema = (response_format.get("json_schema") or {}).get("schema", {})
    else:
        raise InvalidRequest(f"unknown response_format type {kind!r}", param="response_format.type")

    return cache.get(_dumps(schema), lambda: backend.compile_json_schema(schema, SCHEMA_PARAM))


def validate_output(text: str, response_format: dict[str, Any] | None) -> ServiceError | None:
    """Check finished output against ``response_format`` with ``jsonschema``.

    Args:
        text: the whole generated content.
        response_format: the request's ``response_format``.

    Patterns are matched by RE2 (:mod:`.patterns`): linear in the text, the interpreter is
    never held. Output nesting deeper than :data:`MAX_OUTPUT_DEPTH` is not checked and
    fails.

    Returns:
        None when the text conforms (always for ``text``), else a :class:`ServiceError`
        (HTTP 500, code ``invalid_output``) that names the violation, for the caller to raise.
    """
    kind = (response_format or {}).get("type", "text")
    if kind == "text":
        return None
    try:
        value = json.loads(text)
    except RecursionError:
        return _too_deep()
    except ValueError as exc:
        return ServiceError(f"output is not JSON: {exc}", code="invalid_output")
    if kind == "json_object":
        schema = {"type": "object"}
    else:
        schema = (response_format.get("json_schema") or {}).get("schema", {})
    if _value_depth(value) > MAX_OUTPUT_DEPTH:
        return _too_deep()
    validator = re2_validator_for(schema)(schema, format_checker=jsonschema.FormatChecker())
    try:
        error = jsonschema.exceptions.best_match(validator.iter_errors(value))
    except RecursionError:
        return _too_deep()
    if error is None:
        return None
    return ServiceError(f"output does not match the schema at '{error.json_path}': {error.message}", code="invalid_output")


def _too_deep() -> ServiceError:
    return ServiceError(f"output nests JSON deeper than {MAX_OUTPUT_DEPTH} levels, the most the final check "
                        "checks", code="invalid_output")


def _value_depth(value: Any) -> int:
    """How many arrays and objects nest in a parsed JSON value (iterative: any depth)."""
    deepest, pending = 0, [(value, 1)]
    while pending:
        item, level = pending.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is not None:
            deepest = max(deepest, level)
            pending.extend((child, level + 1) for child in children)
    return deepest


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=JSON_SEPARATORS, ensure_ascii=False)


def reject_on_failure(convert: Callable[[], Any], param: str) -> Any:
    """Run a grammar conversion or compilation and return its result.

    Raises:
        InvalidRequest: with ``param``, when it raises (xgrammar's location prefix removed).
    """
    try:
        return convert()
    except (RuntimeError, ValueError, TypeError) as exc:
        reason = _XGRAMMAR_LOCATION.sub("", str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)
        raise InvalidRequest(f"JSON Schema cannot be compiled to a grammar: {reason}", param=param) from None


def _check_node(node: Any, path: str, root: Any, param: str, xgrammar_rules: bool = True) -> None:
    """Walk one subschema at JSON Pointer ``path``; see the module docstring for the rules."""
    if not isinstance(node, dict):
        return

    def reject(keyword: str, why: str) -> None:
        raise InvalidRequest(f"JSON Schema keyword '{keyword}' at '{path}/{keyword}' {why}", param=param)

    if "$ref" in node:
        _check_ref(node["$ref"], root, reject)
    if xgrammar_rules:
        _check_xgrammar_rules(node, reject)
    if "pattern" in node:
        _check_pattern(node["pattern"], reject, xgrammar_rules)
    for keyword in ("const", "enum"):
        if keyword in node:
            _check_values(keyword, node, root, reject)

    for keyword in _SCHEMA_MAPS:
        for name, child in node.get(keyword, {}).items():
            _check_node(child, f"{path}/{keyword}/{_escape(name)}", root, param, xgrammar_rules)
    for keyword in SCHEMA_LISTS:
        for index, child in enumerate(node.get(keyword, [])):
            _check_node(child, f"{path}/{keyword}/{index}", root, param, xgrammar_rules)
    for keyword in SCHEMA_VALUES:
        if keyword in node:
            _check_node(node[keyword], f"{path}/{keyword}", root, param, xgrammar_rules)


def _check_xgrammar_rules(node: dict[str, Any], reject: Callable[[str, str], None]) -> None:
    """The keywords and combinations of one subschema that xgrammar 0.2.9 cannot enforce."""
    for keyword in sorted(UNSUPPORTED & node.keys()):
        reject(keyword, "is not supported by constrained decoding")
    if "$ref" in node and (siblings := sorted(_ASSERTIONS & node.keys())):
        reject("$ref", f"has sibling assertions {siblings}, which are not supported next to '$ref'")
    if node.get("uniqueItems") is True:
        reject("uniqueItems", "(true) is not supported by constrained decoding")
    if "multipleOf" in node and not (node.get("type") == "integer" and isinstance(node["multipleOf"], int)):
        reject("multipleOf", "is only supported with type 'integer' and an integer value")
    if "multipleOf" in node and _RANGE & node.keys():
        reject("multipleOf", "combined with minimum/maximum is not supported")
    if (limits := sorted({"minLength", "maxLength"} & node.keys())) and ("pattern" in node or "format" in node):
        reject(limits[0], "combined with 'pattern' or 'format' is not supported")
    if len(node.get("allOf", [])) > 1:
        reject("allOf", "with more than one schema is not supported; merge them into one schema")
    if isinstance(node.get("items"), list):
        reject("items", "as an array (tuple form) is not supported; use 'prefixItems'")
    for keyword in ("exclusiveMinimum", "exclusiveMaximum"):
        if isinstance(node.get(keyword), bool):
            reject(keyword, "as a boolean (draft 4) is not supported; give the bound as a number")
    if missing := sorted(set(node.get("required", [])) - set(node.get("properties", {}))):
        reject("required", f"names {missing}, not declared in 'properties'; declare each required property")
    types = node.get("type", "string")
    if "format" in node and "string" in (types if isinstance(types, list) else [types]):
        if node["format"] not in SUPPORTED_FORMATS:
            reject("format", f"{node['format']!r} is not enforceable; supported: {sorted(SUPPORTED_FORMATS)}")


def _check_ref(ref: str, root: Any, reject: Callable[[str, str], None]) -> None:
    """Accept only ``#`` or ``#/json/pointer`` references that resolve inside ``root``."""
    if ref != "#" and not ref.startswith("#/"):
        reject("$ref", f"{ref!r} is not a local JSON Pointer ('#/...'); remote and anchor references are not supported")
    if resolve_ref(ref, root) is None:
        reject("$ref", f"{ref!r} does not resolve inside the schema")


def _check_pattern(pattern: str, reject: Callable[[str, str], None], xgrammar_rules: bool = True) -> None:
    """Reject regexes the final check and the grammar would read differently (see
    :mod:`.patterns`), or, with ``xgrammar_rules``, that xgrammar cannot convert."""
    shown = repr(pattern) if len(pattern) <= 100 else repr(pattern[:100]) + "..."
    try:
        compile_pattern(pattern)
    except PatternError as exc:
        reject("pattern", f"{shown} {exc}")
    if not xgrammar_rules:
        return
    import xgrammar

    try:
        xgrammar.Grammar.from_regex(pattern)
    except (RuntimeError, ValueError) as exc:
        reject("pattern", f"{shown} is not supported: {_XGRAMMAR_LOCATION.sub('', str(exc).strip())}")


def _check_values(keyword: str, node: dict[str, Any], root: Any, reject: Callable[[str, str], None]) -> None:
    """Reject a ``const``/``enum`` value that its sibling keywords refuse: the grammar emits the
    value as given, and the final check would fail it."""
    siblings = {k: v for k, v in node.items() if k != keyword}
    validator = re2_validator_for(root)(root, format_checker=jsonschema.FormatChecker()).evolve(schema=siblings)
    for value in [node["const"]] if keyword == "const" else node["enum"]:
        error = jsonschema.exceptions.best_match(validator.iter_errors(value))
        if error is not None:
            reject(keyword, f"value {_dumps(value)[:200]} breaks its sibling keyword '{error.validator}': "
                            f"{error.message[:300]}")


def _escape(name: str) -> str:
    return name.replace("~", "~0").replace("/", "~1")
