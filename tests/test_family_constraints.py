"""Constrained decoding per family: ``tool_choice`` ``required``, a named function and
``parallel_tool_calls: false`` make the model write that family's own call text, valid by
construction, and the family table parses it back. Offline on the grammar, and live: the
bundled model served with a family's format forced (``--tool-call-parser``), through the
official ``openai`` client, streamed and not; in-process for the other formats."""

from __future__ import annotations

import asyncio
import json

import openai
import pytest

from mcp_server.engines.base import GenerationRequest, SamplingParams
from mcp_server.engines.embedded.decoding.toolcalls import GrammarProvider
from mcp_server.engines.embedded.engine import EmbeddedEngine
from mcp_server.engines.embedded.family import grammar_format
from mcp_server.families import TOOL_CALL_PARSERS, parse
from tests.live_server import start_server

TEMPLATED = sorted(name for name, syntax in TOOL_CALL_PARSERS.items() if syntax.template and name not in ("qwen", "qwen25"))
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
TIME = {"type": "function", "function": {"name": "get_time"}}
TOOLS = [WEATHER, TIME]
NAMED = {"type": "function", "function": {"name": "get_weather"}}


def accepts(backend, tokenizer, fmt, text, tool_choice, parallel=True) -> bool:
    request = GenerationRequest(model="m", messages=[], tools=TOOLS, tool_choice=tool_choice, parallel_tool_calls=parallel)
    matcher = backend.matcher(GrammarProvider(backend, fmt)(request, tokenizer))
    tokens = [*tokenizer.encode(text, add_special_tokens=False), tokenizer.eos_token_id]
    return all(matcher.accept(t) for t in tokens) and matcher.is_terminated()


def test_every_json_argument_format_has_a_constraint():
    assert {"hermes", "llama3", "mistral", "deepseekv3", "deepseekv31", "kimi_k2", "gpt-oss"} <= set(TEMPLATED)
    assert grammar_format("qwen3_coder") is None  # XML arguments: required/named refused (400)


@pytest.mark.parametrize("name", TEMPLATED)
def test_constraint_accepts_the_family_text_and_the_table_parses_it_back(grammar_backend, tokenizer, name):
    fmt = grammar_format(name)
    one = fmt.call_text("get_weather", '{"city":"Paris"}')
    two = one + fmt.separator + fmt.call_text("get_time", "{}")
    assert accepts(grammar_backend, tokenizer, fmt, one, "required") and accepts(grammar_backend, tokenizer, fmt, one, NAMED)
    assert accepts(grammar_backend, tokenizer, fmt, two, "required")
    assert not accepts(grammar_backend, tokenizer, fmt, two, "required", parallel=False)
    assert not accepts(grammar_backend, tokenizer, fmt, fmt.call_text("get_weather", '{"town":"Paris"}'), "required")
    tools = {"get_weather": WEATHER["function"]["parameters"], "get_time": {}}
    content, _, calls = parse(name, None, two, tools)
    assert content is None and [(c.name, json.loads(c.arguments)) for c in calls] == [
        ("get_weather", {"city": "Paris"}),
        ("get_time", {}),
    ]


async def _generate(engine, tool_choice, parallel):
    request = GenerationRequest(
        model="m", messages=[{"role": "user", "content": "Weather in Paris and the time?"}], tools=TOOLS,
        tool_choice=tool_choice, parallel_tool_calls=parallel, max_tokens=96,
        sampling=SamplingParams(temperature=0),
    )
    calls, finish = {}, None
    async for delta in engine.generate(request):
        for piece in delta.tool_calls:
            call = calls.setdefault(piece.index, {"name": piece.name, "arguments": ""})
            call["arguments"] += piece.arguments
        finish = delta.finish_reason or finish
    return [calls[i] for i in sorted(calls)], finish


@pytest.mark.parametrize("name", [n for n in TEMPLATED if n not in ("hermes", "mistral")])
@pytest.mark.parametrize("backend", ["llguidance", "xgrammar"])
def test_in_process_engine_with_the_format_forced_returns_valid_calls(name, backend):
    engine = EmbeddedEngine(max_batch_size=2, tool_call_parser=name, grammar_backend=backend)
    asyncio.run(engine.start())
    try:
        assert engine.models[0].tool_call_format == name
        finishes = []
        for tool_choice, parallel in (("required", True), (NAMED, True), ("required", False)):
            calls, finish = asyncio.run(_generate(engine, tool_choice, parallel))
            finishes.append(finish)
            if finish == "length":
                continue  # cut by max_tokens: only complete calls come back
            assert finish == "tool_calls" and calls, (name, tool_choice)
            assert len(calls) == 1 or parallel
            for call in calls:
                assert call["name"] in ("get_weather", "get_time")
                assert isinstance(json.loads(call["arguments"]), dict)
            if tool_choice == NAMED:
                assert [c["name"] for c in calls] == ["get_weather"] and json.loads(calls[0]["arguments"])["city"]
        assert finishes.count("tool_calls") >= 2, finishes
    finally:
        asyncio.run(engine.aclose())


@pytest.fixture(scope="module")
def mistral_client(tmp_path_factory):
    live = start_server(tmp_path_factory.mktemp("mistral"), "--tool-call-parser", "mistral")
    yield openai.OpenAI(base_url=f"{live.base_url}/v1", api_key="unused")
    live.stop()


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
@pytest.mark.parametrize(
    "tool_choice,parallel", [("required", True), (NAMED, True), ("required", False)], ids=["required", "named", "one-call"]
)
def test_live_server_with_mistral_format_forced(mistral_client, tool_choice, parallel, stream):
    kwargs = dict(
        model="HuggingFaceTB/SmolLM2-135M-Instruct", messages=[{"role": "user", "content": "Weather in Paris and the time?"}],
        tools=TOOLS, tool_choice=tool_choice, parallel_tool_calls=parallel, temperature=0, max_tokens=96,
    )
    if stream:
        calls, finish, content = {}, None, ""
        for chunk in mistral_client.chat.completions.create(**kwargs, stream=True):
            for choice in chunk.choices:
                content += choice.delta.content or ""
                for piece in choice.delta.tool_calls or ():
                    call = calls.setdefault(piece.index, {"name": piece.function.name, "arguments": ""})
                    call["arguments"] += piece.function.arguments or ""
                finish = choice.finish_reason or finish
        calls = [calls[i] for i in sorted(calls)]
    else:
        choice = mistral_client.chat.completions.create(**kwargs).choices[0]
        finish, content = choice.finish_reason, choice.message.content or ""
        calls = [{"name": c.function.name, "arguments": c.function.arguments} for c in choice.message.tool_calls or ()]
    assert "[TOOL_CALLS]" not in content and "[ARGS]" not in content
    # A named tool_choice ends with "stop", as OpenAI's API does; required keeps "tool_calls".
    assert finish == ("stop" if tool_choice == NAMED else "tool_calls") and calls
    assert len(calls) == 1 or parallel
    for call in calls:
        assert call["name"] in ("get_weather", "get_time") and isinstance(json.loads(call["arguments"]), dict)
    if tool_choice == NAMED:
        assert [c["name"] for c in calls] == ["get_weather"]
