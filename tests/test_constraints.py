"""response_format -> grammar: keyword rules, defined behaviours, cache, final check."""

from __future__ import annotations

import pytest
import xgrammar

from mcp_server.engines.embedded.decoding.constraints import (
    check_schema,
    compile_response_format,
    schema_ebnf,
    validate_output,
)
from mcp_server.engines.embedded.decoding.grammar_cache import GrammarCache
from mcp_server.errors import EngineUnavailable, InvalidRequest


def schema_format(schema):
    return {"type": "json_schema", "json_schema": {"name": "t", "schema": schema}}


def accepts(xgrammar_backend, tokenizer, schema, text: str) -> bool:
    """Feed ``text`` token by token; True when every token is accepted and the grammar may end."""
    matcher = xgrammar.GrammarMatcher(compile_response_format(xgrammar_backend, schema_format(schema), GrammarCache()))
    return all(matcher.accept_token(t) for t in tokenizer.encode(text, add_special_tokens=False)) and matcher.is_completed()


@pytest.mark.parametrize(
    ("schema", "keyword", "path"),
    [
        ({"properties": {"a": {"not": {"type": "string"}}}}, "not", "/properties/a/not"),
        ({"if": {"required": ["a"]}, "then": {}}, "if", "/if"),
        ({"properties": {"a": {}}, "dependentRequired": {"a": ["b"]}}, "dependentRequired", "/dependentRequired"),
        ({"type": "array", "uniqueItems": True}, "uniqueItems", "/uniqueItems"),
        ({"type": "number", "multipleOf": 0.5}, "multipleOf", "/multipleOf"),
        ({"type": "object", "patternProperties": {"^x": {}}}, "patternProperties", "/patternProperties"),
        ({"type": "array", "items": {"type": "array", "contains": {"type": "string"}}}, "contains", "/items/contains"),
        ({"$defs": {"d": {"type": "string", "format": "iri"}}, "$ref": "#/$defs/d"}, "format", "/$defs/d/format"),
        ({"type": "string", "pattern": "^(?=a)[ab]+$"}, "pattern", "/pattern"),
        ({"type": "string", "pattern": "^(a)\\1$"}, "pattern", "/pattern"),
        ({"anyOf": [{"type": "string"}, {"allOf": [{"minLength": 1}, {"maxLength": 3}]}]}, "allOf", "/anyOf/1/allOf"),
        ({"type": "object", "required": ["a"]}, "required", "/required"),
        ({"$ref": "https://example.com/s.json"}, "$ref", "/$ref"),
        ({"$ref": "#/$defs/missing"}, "$ref", "/$ref"),
        ({"$defs": {"s": {"type": "string"}}, "$ref": "#/$defs/s", "maxLength": 2}, "$ref", "/$ref"),
        ({"type": "integer", "multipleOf": 2, "minimum": 0}, "multipleOf", "/multipleOf"),
        ({"type": "string", "pattern": "^a+$", "maxLength": 3}, "maxLength", "/maxLength"),
        ({"type": "object", "unevaluatedProperties": False}, "unevaluatedProperties", "/unevaluatedProperties"),
        ({"type": "object", "propertyNames": {"pattern": "^a"}}, "propertyNames", "/propertyNames"),
    ],
)
def test_unenforceable_keyword_is_rejected_with_its_path(schema, keyword, path):
    with pytest.raises(InvalidRequest) as caught:
        check_schema(schema)
    assert f"'{keyword}' at '{path}'" in caught.value.message
    assert caught.value.param == "response_format.json_schema.schema"


def test_tool_schema_errors_name_the_tool_param():
    with pytest.raises(InvalidRequest) as caught:
        schema_ebnf({"type": "object", "not": {}}, param="tools[1].function.parameters")
    assert caught.value.param == "tools[1].function.parameters"


def test_schema_failing_its_meta_schema_is_rejected():
    with pytest.raises(InvalidRequest, match="invalid JSON Schema at '/minLength'"):
        check_schema({"type": "string", "minLength": -1})


def test_compile_failure_becomes_invalid_request(xgrammar_backend):
    with pytest.raises(InvalidRequest, match="cannot be compiled.*minLength"):
        compile_response_format(xgrammar_backend, schema_format({"type": "string", "minLength": 5, "maxLength": 2}), GrammarCache())


RECURSIVE = {
    "$defs": {"node": {"type": "object", "properties": {"kids": {"type": "array", "items": {"$ref": "#/$defs/node"}}}}},
    "$ref": "#/$defs/node",
}


@pytest.mark.parametrize(
    ("schema", "good", "bad"),
    [
        (RECURSIVE, '{"kids":[{"kids":[]},{}]}', '{"kids":[{"kids":[1]}]}'),
        ({"definitions": {"n": {"type": "integer"}}, "$ref": "#/definitions/n"}, "7", '"7"'),
        ({"anyOf": [{"type": "integer"}, {"type": "string", "maxLength": 2}]}, '"ab"', '"abc"'),
        ({"oneOf": [{"type": "integer"}, {"type": "boolean"}]}, "true", "null"),
        ({"enum": ["red", 1, None]}, "null", '"blue"'),
        ({"const": {"x": [1, "é"]}}, '{"x":[1,"é"]}', '{"x":[1]}'),
        ({"type": "string", "pattern": "^[a-z]+-\\d{2}$"}, '"ab-12"', '"ab-1"'),
        ({"type": "string", "pattern": "[0-9]"}, '"7"', '"a7b"'),
        ({"type": "string", "format": "date"}, '"2025-01-31"', '"31/01/2025"'),
        ({"type": "integer", "format": "int32"}, "12", '"12"'),
        ({"type": "array", "items": {"type": "integer"}, "minItems": 1, "maxItems": 2}, "[1,2]", "[1,2,3]"),
        ({"type": "array", "items": {"type": "integer"}, "minItems": 1}, "[1]", "[]"),
        ({"type": "object", "properties": {"a": {"type": "integer"}}, "additionalProperties": False}, '{"a":1}', '{"b":1}'),
        ({"type": "object", "properties": {"a": {"type": "integer"}}}, '{"a":1}', '{"a":1,"b":2}'),
        ({"type": "object", "properties": {"a": {}}, "additionalProperties": {"type": "integer"}}, '{"a":"x","b":2}', '{"b":"x"}'),
        ({"type": "object", "properties": {"a": {}, "b": {}}, "required": ["b"]}, '{"a":1,"b":2}', '{"b":2,"a":1}'),
        ({"type": "integer", "multipleOf": 3}, "9", "10"),
    ],
    ids=["recursive-ref", "definitions", "anyOf", "oneOf", "enum", "const", "pattern", "pattern-whole-string",
         "format", "format-annotation", "maxItems", "minItems", "additionalProperties-false",
         "additionalProperties-unspecified", "additionalProperties-schema", "property-order", "multipleOf-integer"],
)  # fmt: skip
def test_defined_behaviour(xgrammar_backend, tokenizer, schema, good, bad):
    assert accepts(xgrammar_backend, tokenizer, schema, good)
    assert not accepts(xgrammar_backend, tokenizer, schema, bad)


def test_oneof_overlap_is_caught_by_the_final_check(xgrammar_backend, tokenizer):
    schema = {"oneOf": [{"type": "integer"}, {"type": "number"}]}
    assert accepts(xgrammar_backend, tokenizer, schema, "1")
    assert validate_output("1", schema_format(schema)) is not None
    assert validate_output("1.5", schema_format(schema)) is None


def test_json_object_is_any_object_in_compact_form(xgrammar_backend, tokenizer):
    grammar = compile_response_format(xgrammar_backend, {"type": "json_object"}, GrammarCache())
    for text, ok in [('{"a":[1,{"b":null}]}', True), ("{}", True), ("[1]", False), ('{"a": 1}', False)]:
        matcher = xgrammar.GrammarMatcher(grammar)
        assert (matcher.accept_string(text) and matcher.is_completed()) is ok, text


def test_text_and_none_have_no_grammar(xgrammar_backend):
    assert compile_response_format(xgrammar_backend, None, GrammarCache()) is None
    assert compile_response_format(xgrammar_backend, {"type": "text"}, GrammarCache()) is None
    with pytest.raises(InvalidRequest) as caught:
        compile_response_format(xgrammar_backend, {"type": "yaml"}, GrammarCache())
    assert caught.value.param == "response_format.type"


def test_cache_hits_on_the_same_schema_and_is_bounded(xgrammar_backend):
    cache = GrammarCache(maxsize=2)
    first = compile_response_format(xgrammar_backend, schema_format({"type": "integer"}), cache)
    assert compile_response_format(xgrammar_backend, schema_format({"type": "integer"}), cache) is first
    assert (cache.hits, cache.misses) == (1, 1)
    for schema in ({"type": "string"}, {"type": "boolean"}):
        compile_response_format(xgrammar_backend, schema_format(schema), cache)
    assert len(cache) == 2
    compile_response_format(xgrammar_backend, schema_format({"type": "integer"}), cache)
    assert cache.misses == 4


def test_rejected_schema_is_not_cached(xgrammar_backend):
    cache = GrammarCache()
    with pytest.raises(InvalidRequest):
        compile_response_format(xgrammar_backend, schema_format({"not": {}}), cache)
    assert len(cache) == 0


def test_validate_output():
    rf = schema_format({"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]})
    assert validate_output('{"a":1}', rf) is None
    error = validate_output('{"a":"x"}', rf)
    assert error.status_code == 500 and "$.a" in error.message
    assert "not JSON" in validate_output('{"a":', rf).message
    assert validate_output("[]", {"type": "json_object"}) is not None
    assert validate_output("anything", {"type": "text"}) is None
    assert validate_output('"2025-13-45"', schema_format({"type": "string", "format": "date"})) is not None


def test_cache_is_bounded_by_bytes_and_keeps_no_oversized_grammar(xgrammar_backend):
    one = compile_response_format(xgrammar_backend, schema_format({"type": "integer"}), GrammarCache()).memory_size_bytes
    cache = GrammarCache(max_bytes=2 * one + one // 2)
    for schema in ({"type": "integer"}, {"type": "number"}, {"type": "boolean"}):
        compile_response_format(xgrammar_backend, schema_format(schema), cache)
        assert cache.nbytes <= cache.max_bytes
    assert len(cache) == 2
    tiny = GrammarCache(max_bytes=one // 2)
    assert compile_response_format(xgrammar_backend, schema_format({"type": "integer"}), tiny) is not None
    assert len(tiny) == 0 and tiny.nbytes == 0


SLOW_SCHEMA = {
    "type": "object",
    "properties": {f"p{i}": {"type": "string", "pattern": "^((ab|cd){1,30}(ef|gh){1,30}){1,30}$"} for i in range(3)},
    "required": [f"p{i}" for i in range(3)],
}
"""A schema that takes xgrammar seconds to compile (200 such properties took 134 s)."""


def test_compilation_past_the_time_limit_is_a_400_and_is_not_cached(xgrammar_backend):
    cache = GrammarCache(compile_timeout=0.01)
    with pytest.raises(InvalidRequest) as caught:
        compile_response_format(xgrammar_backend, schema_format(SLOW_SCHEMA), cache)
    assert caught.value.param == "response_format.json_schema.schema"
    assert "took longer than" in str(caught.value)
    assert len(cache) == 0


def test_abandoned_compilations_cannot_pile_up(xgrammar_backend):
    cache = GrammarCache(compile_timeout=0.01, max_compiling=1)
    with pytest.raises(InvalidRequest):
        compile_response_format(xgrammar_backend, schema_format(SLOW_SCHEMA), cache)
    with pytest.raises(EngineUnavailable, match="busy"):  # the first one still compiles
        compile_response_format(xgrammar_backend, schema_format({"type": "integer"}), cache)
