"""The llama.cpp serving path without torch, and the grammar backends behind one interface."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

SERVE_ONE = r"""
import json, sys
from starlette.testclient import TestClient
from mcp_server.app import create_app
from mcp_server.settings import Settings

schema = {"type": "object", "properties": {"color": {"enum": ["red", "green"]}}, "required": ["color"]}
weather = {"type": "function", "function": {"name": "get_weather",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
with TestClient(create_app(Settings(runner="llamacpp"))) as client:
    answers = [
        client.post("/v1/chat/completions", json={
            "messages": [{"role": "user", "content": "A color?"}], "max_tokens": 16, "temperature": 0.7, "seed": 1,
            "logprobs": True, "top_logprobs": 2, "presence_penalty": 0.5,
            "response_format": {"type": "json_schema", "json_schema": {"name": "c", "schema": schema}}}),
        client.post("/v1/chat/completions", json={
            "messages": [{"role": "user", "content": "Weather in Paris?"}], "max_tokens": 40, "temperature": 0,
            "tools": [weather], "tool_choice": {"type": "function", "function": {"name": "get_weather"}}}),
    ]
print(json.dumps({"status": [a.status_code for a in answers], "bodies": [a.json() for a in answers],
                  "torch": "torch" in sys.modules, "xgrammar": "xgrammar" in sys.modules}))
"""


def test_the_llamacpp_serving_path_imports_no_torch():
    done = subprocess.run(
        [sys.executable, "-c", SERVE_ONE], cwd=ROOT, capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["status"] == [200, 200], result["bodies"]
    structured, called = result["bodies"]
    assert json.loads(structured["choices"][0]["message"]["content"])["color"] in ("red", "green")
    assert structured["choices"][0]["logprobs"]["content"]
    call = called["choices"][0]["message"]["tool_calls"][0]["function"]
    assert call["name"] == "get_weather" and isinstance(json.loads(call["arguments"])["city"], str)
    assert (result["torch"], result["xgrammar"]) == (False, False)


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
    import multiprocessing
    import time
    from concurrent.futures import ThreadPoolExecutor

    from mcp_server.engines.embedded.decoding.constraints import compile_response_format
    from mcp_server.engines.embedded.decoding.grammar_cache import GrammarCache
    from mcp_server.errors import InvalidRequest

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
        assert time.monotonic() - start < 5  # the bound: the slots are free again
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
    import pytest

    from mcp_server.errors import InvalidRequest

    param = "response_format.json_schema.schema"
    for schema, keyword in (
        ({"type": "object", "not": {"required": ["a"]}}, "not"),
        ({"type": "array", "items": {"type": "integer"}, "uniqueItems": True}, "uniqueItems"),
        ({"type": "string", "format": "idn-hostname"}, "format"),
    ):
        with pytest.raises(InvalidRequest) as caught:
            grammar_backend.compile_json_schema(schema, param)
        assert f"'{keyword}'" in caught.value.message and caught.value.param == param
