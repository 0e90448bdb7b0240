"""Grammar backends behind one interface: compilations that stop at their limit, and refusals that name the keyword."""

from __future__ import annotations

import multiprocessing
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from mcp_server.engines.embedded.decoding.constraints import compile_response_format
from mcp_server.engines.embedded.decoding.grammar_cache import GrammarCache
from mcp_server.errors import InvalidRequest


def _rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096 / 2**20


HEAVY = [
    {
        "type": "object",
        "properties": {
            f"p{i}": {"type": "string", "pattern": f"^((ab|c{k}){{1,30}}(ef|gh){{1,30}}){{1,30}}$"} for i in range(100)
        },
    }
    for k in range(4)
]
"""Four schemas that take xgrammar about a minute and gigabytes each (issue F6)."""


def test_compilations_past_the_limit_are_stopped_and_free_their_slot_core_and_memory(xgrammar_backend, llguidance_backend):
    def formats(schema):
        return {"type": "json_schema", "json_schema": {"name": "s", "schema": schema}}

    xgrammar_backend.compile_timeout = 2.0
    try:
        cache = GrammarCache(compile_timeout=2.0, max_compiling=4, sizeof=xgrammar_backend.size_bytes)
        before = _rss_mb()
        with ThreadPoolExecutor(4) as pool:
            futures = [pool.submit(compile_response_format, xgrammar_backend, formats(s), cache) for s in HEAVY]
            errors = [f.exception(timeout=60) for f in futures]
        assert all(isinstance(e, InvalidRequest) and "took longer than" in e.message for e in errors), errors
        start = time.monotonic()
        assert compile_response_format(xgrammar_backend, formats({"type": "integer"}), cache) is not None
        assert time.monotonic() - start < 5  # the issue's bound: the slots are free again
        deadline = time.monotonic() + 10  # each child is killed at its own limit, just after the caller's
        while multiprocessing.active_children() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not multiprocessing.active_children()  # the compilations' processes (and cores) are gone
        assert _rss_mb() - before < 300
    finally:
        xgrammar_backend.compile_timeout = 10.0
    # llguidance's compilation is bounded: the same schemas compile (lazily), within the limit.
    cache = GrammarCache(compile_timeout=10.0, sizeof=llguidance_backend.size_bytes)
    for schema in HEAVY:
        assert compile_response_format(llguidance_backend, formats(schema), cache) is not None


def test_keywords_a_backend_cannot_enforce_are_refused_naming_the_keyword(grammar_backend):
    param = "response_format.json_schema.schema"
    for schema, keyword in (
        ({"type": "object", "not": {"required": ["a"]}}, "not"),
        ({"type": "array", "items": {"type": "integer"}, "uniqueItems": True}, "uniqueItems"),
        ({"type": "string", "format": "idn-hostname"}, "format"),
    ):
        with pytest.raises(InvalidRequest) as caught:
            grammar_backend.compile_json_schema(schema, param)
        assert f"'{keyword}'" in caught.value.message and caught.value.param == param


def _accepts(backend, tokenizer, compiled, text: str) -> bool:
    """Feed ``text``'s tokens, then the end token; True when all are accepted and the grammar ended."""
    matcher = backend.matcher(compiled)
    tokens = [*tokenizer.encode(text, add_special_tokens=False), tokenizer.eos_token_id]
    return all(matcher.accept(token) for token in tokens) and matcher.is_terminated()


def test_llguidance_enforces_a_double_negation_as_the_schema_it_negates(llguidance_backend, tokenizer):
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"],
              "allOf": [{"not": {"not": {"properties": {"n": {"maximum": 5}}}}}]}  # fmt: skip
    compiled = llguidance_backend.compile_json_schema(schema, "response_format")
    assert _accepts(llguidance_backend, tokenizer, compiled, '{"n":3}')
    assert not _accepts(llguidance_backend, tokenizer, compiled, '{"n":7}')
    with pytest.raises(InvalidRequest, match="'not'"):  # a single negation still cannot be enforced
        llguidance_backend.compile_json_schema({"not": {"type": "string"}}, "response_format")


def test_llguidance_leaves_objects_open_whose_properties_come_from_a_ref(llguidance_backend, tokenizer):
    # Strict mode closed the root ({"type": "object"} beside the $ref) and the schema became unsatisfiable.
    schema = {"$ref": "#/$defs/d", "type": "object",
              "$defs": {"d": {"properties": {"basic": {"type": "string"}}, "required": ["basic"]}}}  # fmt: skip
    compiled = llguidance_backend.compile_json_schema(schema, "response_format")
    assert _accepts(llguidance_backend, tokenizer, compiled, '{"basic":"x"}')
    assert not _accepts(llguidance_backend, tokenizer, compiled, '{"other":"x"}')


def test_forced_tokens_spell_the_text_the_grammar_forces(grammar_backend, tokenizer):
    """Jump-forward's drafts: at an object's start only ``{"country_code":"`` may follow; the
    forced tokens spell most of it (a last token that could merge with what follows is left
    out), the matcher accepts them, and inside a free string nothing is forced."""
    schema = {"type": "object", "properties": {"country_code": {"type": "string"}}, "required": ["country_code"]}
    matcher = grammar_backend.matcher(grammar_backend.compile_json_schema(schema, "response_format"))
    forced = matcher.forced_tokens()
    text = tokenizer.decode(forced)
    assert '{"country_code":"'.startswith(text) and len(text) >= len('{"country_code'), text
    assert all(matcher.accept(token) for token in forced)
    rest = tokenizer.encode('{"country_code":"F'[len(text) :], add_special_tokens=False)
    assert all(matcher.accept(token) for token in rest)
    assert matcher.forced_tokens() == []
