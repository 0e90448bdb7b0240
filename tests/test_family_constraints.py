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
from mcp_server.engines.embedded.decoding.toolcalls.support import check_tools_allowed, grammar_format
from mcp_server.errors import InvalidRequest
from mcp_server.families import TOOL_CALL_PARSERS, parse
from tests.live_server import start_server

TEMPLATED = sorted(name for name, syntax in TOOL_CALL_PARSERS.items() if syntax.template and name not in ("qwen", "qwen25"))
NOTATED = [name for name in TEMPLATED if grammar_format(name).arguments]
"""Formats whose arguments are not one JSON object (XML-style, pythonic, Gemma 4)."""
XGRAMMAR_STYLED = [name for name in NOTATED if grammar_format(name).arguments.xgrammar_style]
"""Of those, the ones xgrammar compiles too (its JSONSchemaFormat styles)."""
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
LIVE_TOOLS = [
    {"type": "function", "function": {**WEATHER["function"], "parameters": {
        "type": "object", "properties": {"city": {"type": "string", "maxLength": 24}}, "required": ["city"]}}},
    TIME,
]
"""The live tests' tools: the city bounded, because SmolLM2-135M often writes on about Paris
inside a raw-text value (XML-style formats, Gemma 4's ``<|"|>`` strings) until max_tokens; the
bound makes the grammar close it."""
ENUM_TOOLS = [
    {"type": "function", "function": {**WEATHER["function"], "parameters": {
        "type": "object", "properties": {"city": {"type": "string", "enum": ["Paris", "London"]}}, "required": ["city"]}}},
    TIME,
]


def accepts(backend, tokenizer, fmt, text, tool_choice, parallel=True) -> bool:
    request = GenerationRequest(model="m", messages=[], tools=TOOLS, tool_choice=tool_choice, parallel_tool_calls=parallel)
    matcher = backend.matcher(GrammarProvider(backend, fmt)(request, tokenizer))
    tokens = [*tokenizer.encode(text, add_special_tokens=False), tokenizer.eos_token_id]
    return all(matcher.accept(t) for t in tokens) and matcher.is_terminated()


def test_every_format_has_a_constraint():
    assert set(TEMPLATED) == set(TOOL_CALL_PARSERS) - {"qwen", "qwen25"}
    assert {"qwen3_coder", "glm45", "glm47", "deepseekv32", "deepseekv4", "deepseekv41", "kimi_k3", "pythonic", "gemma4"} == set(NOTATED)
    assert set(XGRAMMAR_STYLED) == {"deepseekv32", "deepseekv4", "deepseekv41", "gemma4"}


@pytest.mark.parametrize("name", TEMPLATED)
def test_constraint_accepts_the_family_text_and_the_table_parses_it_back(grammar_backend, tokenizer, name):
    fmt = grammar_format(name)
    if name in NOTATED and not grammar_backend.compiles_arguments(fmt.arguments):
        request = GenerationRequest(model="m", messages=[], tools=TOOLS, tool_choice="required")
        with pytest.raises(InvalidRequest) as refused:
            check_tools_allowed(request, name, grammar_backend)
        assert refused.value.param == "grammar_backend"
        check_tools_allowed(GenerationRequest(model="m", messages=[], tools=TOOLS), name, grammar_backend)  # auto: free text
        return
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


async def _generate(engine, tool_choice, parallel, tools):
    request = GenerationRequest(
        model="m", messages=[{"role": "user", "content": "Weather in Paris and the time?"}], tools=tools,
        tool_choice=tool_choice, parallel_tool_calls=parallel, max_tokens=200,
        sampling=SamplingParams(temperature=0),
    )
    calls, finish = {}, None
    async for delta in engine.generate(request):
        for piece in delta.tool_calls:
            call = calls.setdefault(piece.index, {"name": piece.name, "arguments": ""})
            call["arguments"] += piece.arguments
        finish = delta.finish_reason or finish
    return [calls[i] for i in sorted(calls)], finish


IN_PROCESS = [
    *((name, backend) for name in TEMPLATED if name not in ("hermes", "mistral", *NOTATED) for backend in ("llguidance", "xgrammar")),
    *((name, "xgrammar") for name in XGRAMMAR_STYLED),  # llguidance: the live server test below
]


@pytest.mark.parametrize("name,backend", IN_PROCESS)
def test_in_process_engine_with_the_format_forced_returns_valid_calls(name, backend):
    engine = EmbeddedEngine(max_batch_size=2, tool_call_parser=name, grammar_backend=backend)
    # xgrammar does not bound raw-text values (maxLength is refused there): the city is an enum.
    tools = ENUM_TOOLS if name in NOTATED else LIVE_TOOLS
    asyncio.run(engine.start())
    try:
        assert engine.models[0].tool_call_format == name
        finishes = []
        for tool_choice, parallel in (("required", True), (NAMED, True), ("required", False)):
            calls, finish = asyncio.run(_generate(engine, tool_choice, parallel, tools))
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




@pytest.fixture(scope="module", params=["mistral", *NOTATED])
def live_format(request, tmp_path_factory):
    """``(format name, openai client)``: a live server with the format forced, one per format."""
    name = request.param
    live = start_server(tmp_path_factory.mktemp(name), "--tool-call-parser", name)
    yield name, openai.OpenAI(base_url=f"{live.base_url}/v1", api_key="unused")
    live.stop()


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
@pytest.mark.parametrize(
    "tool_choice,parallel", [("required", True), (NAMED, True), ("required", False)], ids=["required", "named", "one-call"]
)
def test_live_server_with_the_format_forced(live_format, tool_choice, parallel, stream):
    name, client = live_format
    kwargs = dict(
        model="HuggingFaceTB/SmolLM2-135M-Instruct", messages=[{"role": "user", "content": "Weather in Paris and the time?"}],
        tools=LIVE_TOOLS, tool_choice=tool_choice, parallel_tool_calls=parallel, temperature=0, max_tokens=200,
    )
    if stream:
        calls, finish, content = {}, None, ""
        for chunk in client.chat.completions.create(**kwargs, stream=True):
            for choice in chunk.choices:
                content += choice.delta.content or ""
                for piece in choice.delta.tool_calls or ():
                    call = calls.setdefault(piece.index, {"name": piece.function.name, "arguments": ""})
                    call["arguments"] += piece.function.arguments or ""
                finish = choice.finish_reason or finish
        calls = [calls[i] for i in sorted(calls)]
    else:
        choice = client.chat.completions.create(**kwargs).choices[0]
        finish, content = choice.finish_reason, choice.message.content or ""
        calls = [{"name": c.function.name, "arguments": c.function.arguments} for c in choice.message.tool_calls or ()]
    # Calls only: no text, and no markup of the format leaks into content.
    assert content.strip() == "" and grammar_format(name).trigger not in content, content
    # A named tool_choice ends with "stop", as OpenAI's API does; required keeps "tool_calls".
    assert finish == ("stop" if tool_choice == NAMED else "tool_calls") and calls, (finish, calls)
    assert len(calls) == 1 or parallel
    for call in calls:
        arguments = json.loads(call["arguments"])
        assert call["name"] in ("get_weather", "get_time") and isinstance(arguments, dict)
        if call["name"] == "get_weather":  # valid against the tool's schema
            assert set(arguments) == {"city"} and isinstance(arguments["city"], str) and len(arguments["city"]) <= 24, arguments
        else:
            assert arguments == {}
    if tool_choice == NAMED:
        assert [c["name"] for c in calls] == ["get_weather"]

FORECAST = {
    "type": "function",
    "function": {
        "name": "forecast",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "days": {"type": "integer", "minimum": 1},
                "unit": {"type": "string", "enum": ["C", "F"]},
                "options": {
                    "type": "object",
                    "properties": {"hourly": {"type": "boolean"}, "fields": {"type": "array", "items": {"type": "string"}}},
                },
                "note": {"type": ["string", "null"]},
                "code": {"type": "string", "minLength": 2, "maxLength": 3},
            },
            "required": ["city", "days"],
        },
    },
}
FORECAST_SCHEMA = FORECAST["function"]["parameters"]


def accepts_call(backend, tokenizer, fmt, name, arguments, tool_choice="required") -> bool:
    request = GenerationRequest(model="m", messages=[], tools=[FORECAST], tool_choice=tool_choice)
    matcher = backend.matcher(GrammarProvider(backend, fmt)(request, tokenizer))
    text = fmt.call_text(name, json.dumps(arguments)) if isinstance(arguments, dict) else arguments
    tokens = [*tokenizer.encode(text, add_special_tokens=False), tokenizer.eos_token_id]
    return all(matcher.accept(t) for t in tokens) and matcher.is_terminated()


@pytest.mark.parametrize("name", NOTATED)
def test_notation_grammar_types_values_by_the_schema(llguidance_backend, tokenizer, name):
    fmt = grammar_format(name)
    full = {"city": "Saint-Denis <La Réunion>\nFR", "days": 3, "unit": "F", "options": {"hourly": True, "fields": ["rain", "wind"]}}
    minimal = {"city": "", "days": 1, "code": "FR"}
    for arguments in (full, minimal):
        assert accepts_call(llguidance_backend, tokenizer, fmt, "forecast", arguments), arguments
        _, _, calls = parse(name, None, fmt.call_text("forecast", json.dumps(arguments)), {"forecast": FORECAST_SCHEMA})
        assert [json.loads(c.arguments) for c in calls] == [{k: arguments[k] for k in FORECAST_SCHEMA["properties"] if k in arguments}]
    rejected = [
        {"city": "Paris"},  # a required argument missing
        {"city": "Paris", "days": 0},  # below minimum
        {"city": "Paris", "days": 2.5},  # not an integer
        {"city": "Paris", "days": 2, "unit": "K"},  # not in the enum
        {"city": "Paris", "days": 2, "wind": 3},  # undeclared
        {"city": "Paris", "days": 2, "options": {"hourly": "yes"}},  # a string where a boolean goes
        {"days": 2, "city": "Paris"},  # required arguments come first, in schema order
        {"city": "Paris", "days": 2, "code": "F"},  # shorter than minLength
        {"city": "Paris", "days": 2, "code": "FRAN"},  # longer than maxLength
    ]
    for arguments in rejected:
        assert not accepts_call(llguidance_backend, tokenizer, fmt, "forecast", arguments), arguments


@pytest.mark.parametrize("name", [n for n in NOTATED if grammar_format(n).arguments.forbidden])
def test_raw_string_values_cannot_hold_the_text_that_ends_them(llguidance_backend, tokenizer, name):
    fmt = grammar_format(name)
    for forbidden in fmt.arguments.forbidden:
        text = fmt.call_text("forecast", json.dumps({"city": f"a{forbidden}b", "days": 1}))
        assert not accepts_call(llguidance_backend, tokenizer, fmt, "forecast", text), forbidden


def test_python_notation_is_python_literals(llguidance_backend, tokenizer):
    fmt = grammar_format("pythonic")
    good = '[forecast(city="Paris", days=2, options={"hourly": False, "fields": []}, note=None)]'
    assert accepts_call(llguidance_backend, tokenizer, fmt, "forecast", good)
    for bad in ('[forecast(city="Paris", days=2, note=null)]', "[forecast(city='Paris', days=2)]", '[forecast(days=2, city="Paris")]'):
        assert not accepts_call(llguidance_backend, tokenizer, fmt, "forecast", bad), bad


@pytest.mark.parametrize("keyword", [{"pattern": "^[A-Z]"}, {"format": "date"}])
@pytest.mark.parametrize("name", ["qwen3_coder", "pythonic", "gemma4"])
def test_a_keyword_the_notation_cannot_enforce_is_refused(llguidance_backend, name, keyword):
    tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {"s": {"type": "string", **keyword}}}}}
    request = GenerationRequest(model="m", messages=[], tools=[tool], tool_choice="required")
    with pytest.raises(InvalidRequest) as refused:
        GrammarProvider(llguidance_backend, grammar_format(name))(request)
    assert refused.value.param == "tools[0].function.parameters" and next(iter(keyword)) in refused.value.message


@pytest.mark.parametrize("name", XGRAMMAR_STYLED)
def test_xgrammar_refuses_string_lengths_it_does_not_enforce_in_raw_values(xgrammar_backend, name):
    request = GenerationRequest(model="m", messages=[], tools=LIVE_TOOLS, tool_choice="required")
    with pytest.raises(InvalidRequest) as refused:
        GrammarProvider(xgrammar_backend, grammar_format(name))(request)
    assert refused.value.param == "tools[0].function.parameters" and "maxLength" in refused.value.message


@pytest.mark.parametrize(("name", "key"), [("pythonic", "class"), ("pythonic", "a-b"), ("gemma4", "a b"), ("qwen3_coder", "a>b")])
def test_an_argument_name_the_notation_cannot_write_is_refused(llguidance_backend, name, key):
    """A name the format's parser would not read back (a Python keyword or a non-identifier as
    a keyword argument, a space in a Gemma 4 bare key, ``>`` in an XML-style tag) is a 400
    naming the parameters, not a grammar whose output fails to parse."""
    tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {key: {"type": "integer"}}}}}
    request = GenerationRequest(model="m", messages=[], tools=[tool], tool_choice="required")
    with pytest.raises(InvalidRequest) as refused:
        GrammarProvider(llguidance_backend, grammar_format(name))(request)
    assert refused.value.param == "tools[0].function.parameters" and repr(key) in refused.value.message


@pytest.mark.parametrize("name", ["get-weather", "class"])
def test_a_function_name_pythonic_cannot_call_is_refused(llguidance_backend, name):
    tools = [{"type": "function", "function": {"name": name, "parameters": {"type": "object", "properties": {}}}}]
    with pytest.raises(InvalidRequest) as refused:
        check_tools_allowed(GenerationRequest(model="m", messages=[], tools=tools, tool_choice="required"), "pythonic", llguidance_backend)
    assert refused.value.param == "tools[0].function.name"
    check_tools_allowed(GenerationRequest(model="m", messages=[], tools=tools), "pythonic", llguidance_backend)  # auto: free text
