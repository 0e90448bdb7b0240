"""Caller-controlled schemas cannot hold the interpreter or end in a 500 (issue F1/F5).

Unit level, no model: the ECMA-262 -> RE2 translation, the refusals at request time (400
naming the keyword), the const/enum check against sibling keywords, the nesting bounds,
and the final output check's linear-time pattern matching.
"""

from __future__ import annotations

import json
import threading
import time

import pytest

from mcp_server.engines.embedded.decoding.constraints import MAX_OUTPUT_DEPTH, check_schema, validate_output
from mcp_server.engines.embedded.decoding.nesting import MAX_SCHEMA_NESTING
from mcp_server.engines.embedded.decoding.patterns import MAX_PATTERN_DEPTH, PatternError, compile_pattern
from mcp_server.errors import InvalidRequest


def _format(schema) -> dict:
    return {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}


def _chain(links: int) -> dict:
    """A schema whose ``$ref`` chain forces ``links`` levels of nested objects."""
    defs = {f"a{i}": {"type": "object", "properties": {"x": {"$ref": f"#/$defs/a{i + 1}"}}, "required": ["x"]}
            for i in range(links)}
    defs[f"a{links}"] = {"type": "string"}
    return {"$defs": defs, "$ref": "#/$defs/a0"}


F1 = {"type": "string", "const": "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa!", "pattern": "^(a+)+$"}

REFUSED = [  # (schema, keyword the 400 names, words of its reason)
    (F1, "const", "pattern"),
    ({"type": "string", "enum": ["abc", "xyz"], "pattern": "^a"}, "enum", "pattern"),
    ({"type": "integer", "const": "a"}, "const", "type"),
    ({"type": "string", "enum": ["2020-01-01", "soon"], "format": "date"}, "enum", "format"),
    ({"type": "string", "pattern": "^a\\Z"}, "pattern", "\\Z"),
    ({"type": "string", "pattern": "^\\Aa$"}, "pattern", "\\A"),
    ({"type": "string", "pattern": "a\nb"}, "pattern", "U+000A"),
    ({"type": "string", "pattern": "a\\nb"}, "pattern", "U+000A"),
    ({"type": "string", "pattern": 'say "hi"'}, "pattern", '"'),
    ({"type": "string", "pattern": "(a)\\1"}, "pattern", "backreference"),
    ({"type": "string", "pattern": "(?<=a)b"}, "pattern", "lookaround"),
    ({"type": "string", "pattern": "[]"}, "pattern", "empty class"),
    ({"type": "string", "pattern": "a{1001}"}, "pattern", "repetition"),
    ({"type": "string", "pattern": "a$b"}, "pattern", "'$'"),  # the grammar ignores anchors: it would emit "ab"
    ({"type": "string", "pattern": "(a$|b)c"}, "pattern", "'$'"),
    ({"type": "string", "pattern": "x(^a)"}, "pattern", "'^'"),
    ({"type": "string", "pattern": "(" * 500 + "a" + ")" * 500}, "pattern", "nests groups"),
    ({"type": "string", "pattern": "(" * (MAX_PATTERN_DEPTH + 1) + ")" * (MAX_PATTERN_DEPTH + 1)}, "pattern", "nests"),
]


@pytest.mark.parametrize(("schema", "keyword", "reason"), REFUSED)
def test_schemas_the_grammar_and_the_check_read_differently_are_refused(schema, keyword, reason):
    with pytest.raises(InvalidRequest) as caught:
        check_schema(schema)
    assert f"'{keyword}'" in caught.value.message and reason in caught.value.message
    assert caught.value.param == "response_format.json_schema.schema"


def test_a_ref_chain_deeper_than_the_bound_is_refused_and_one_within_it_accepted():
    with pytest.raises(InvalidRequest, match="nests subschemas"):
        check_schema(_chain(300))
    check_schema(_chain(MAX_SCHEMA_NESTING // 2 - 2))
    check_schema({"type": "array", "items": {"$ref": "#"}})  # recursion counts once


@pytest.mark.parametrize("schema", [
    {"type": "string", "const": "ab", "pattern": "^a"},
    {"type": "string", "enum": ["a1", "a2"], "pattern": "^a\\d$"},
    {"type": "object", "properties": {"k": {"const": "x", "$comment": "ok"}}},
    {"type": "string", "pattern": '^[^"\\\\]+$'},
    {"type": "string", "pattern": "^[ -~]+$"},
    {"type": "string", "pattern": "^(?<year>\\d{4})-\\d{2}$"},
    {"type": "string", "pattern": "^a$|^(b|c$)"},
])
def test_sound_schemas_are_accepted(schema):
    check_schema(schema)


@pytest.mark.parametrize(("pattern", "text", "matches"), [
    ("^\\d{3}-\\d{4}$", "555-1234", True),
    ("^\\d{3}-\\d{4}$", "555-1234\n", False),  # ECMA-262 $ is the end of input; Python's re says True
    ("^.$", "\u2028", False),  # . excludes the line terminators
    ("^.$", "é", True),
    ("^\\s$", "\u00a0", True),  # ECMA-262 white space is Unicode's
    ("^[\\s\\S]$", "\n", True),
    ("^[\\S]$", " ", False),
    ("^[\\S]$", "x", True),
    ("^[^\\S]$", "\t", True),
    ("^[^]$", "x", True),
    ("^\\uD83D\\uDE00$", "😀", True),
    ("^(?<y>\\d{2})$", "42", True),
    ("b", "abc", True),  # unanchored, as JSON Schema's pattern
])
def test_patterns_keep_their_ecma_262_meaning(pattern, text, matches):
    assert (compile_pattern(pattern).search(text) is not None) is matches


def test_unknown_letter_escapes_are_refused_not_read_as_letters():
    for escape in ("\\Z", "\\A", "\\z", "\\q"):
        with pytest.raises(PatternError, match="do not define"):
            compile_pattern("a" + escape)


def test_the_final_check_matches_a_catastrophic_pattern_in_linear_time():
    """F1's pattern against 100,000 characters: Python's re would take longer than the universe."""
    text = json.dumps("a" * 100_000 + "!")
    beats: list[float] = []
    done = threading.Event()

    def heartbeat():
        while not done.is_set():
            start = time.monotonic()
            time.sleep(0.001)
            beats.append(time.monotonic() - start)

    thread = threading.Thread(target=heartbeat)
    thread.start()
    try:
        error = validate_output(text, _format({"type": "string", "pattern": "^(a+)+$"}))
    finally:
        done.set()
        thread.join()
    assert error is not None and error.code == "invalid_output" and "does not match" in error.message
    assert len(error.message) < 400  # the output is not echoed whole
    assert max(beats) < 1.0  # the other thread kept running (the interpreter was not held)
    assert validate_output(json.dumps("aaa"), _format({"type": "string", "pattern": "^(a+)+$"})) is None


def test_deep_output_fails_cleanly_instead_of_recursing():
    schema = _format({"type": "array", "items": {"$ref": "#"}})
    assert validate_output("[" * 10 + "]" * 10, schema) is None
    for depth in (MAX_OUTPUT_DEPTH + 1, 100_000):
        error = validate_output("[" * depth + "]" * depth, schema)
        assert error is not None and error.code == "invalid_output" and "deeper than" in error.message
