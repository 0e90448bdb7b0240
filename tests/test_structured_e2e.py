"""Structured output and tool calls end to end on the bundled model, through REST.

Greedy decoding; schemas and tools come from the fixtures in ``tests/data/jsonschemabench``.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from pathlib import Path

import jsonschema
import openai
import pytest

from mcp_server.engines.embedded.decoding.constraints import check_schema
from mcp_server.errors import InvalidRequest

MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
DATA = Path(__file__).resolve().parent / "data" / "jsonschemabench"
CONCURRENCY = 8


def enforceable(schema) -> bool:
    try:
        check_schema(schema)
    except InvalidRequest:
        return False
    return True


def pick_schemas(count: int) -> list[tuple[str, dict]]:
    """Round-robin over the sources (file-name prefixes) so every source is represented."""
    by_source: dict[str, list[tuple[str, dict]]] = {}
    for path in sorted(DATA.glob("*.json")):
        schema = json.loads(path.read_text())["schema"]
        if enforceable(schema):
            by_source.setdefault(path.name.split("_")[0].split("---")[0], []).append((path.stem, schema))
    picked: list[tuple[str, dict]] = []
    while len(picked) < count and any(by_source.values()):
        for files in by_source.values():
            if files and len(picked) < count:
                picked.append(files.pop(0))
    return picked


def pick_tools(count: int) -> list[dict]:
    """OpenAI tool definitions from the BFCL files (one per property) and Glaive files."""
    tools: list[dict] = []
    for path in sorted(DATA.glob("BFCL_*.json")) + sorted(DATA.glob("Glaiveai2K*.json")):
        schema = json.loads(path.read_text())["schema"]
        if path.name.startswith("BFCL"):  # {"properties": {name: parameters}}, or anyOf of those
            functions = [item for branch in schema.get("anyOf", [schema]) for item in branch["properties"].items()]
        else:
            functions = [(path.stem.split("---")[1].rsplit("_", 1)[0], schema)]
        for name, parameters in functions:
            name = name.replace(".", "_")
            if enforceable(parameters) and name not in {t["function"]["name"] for t in tools}:
                tools.append({"type": "function", "function": {"name": name, "parameters": parameters}})
    return tools[:count]


async def gather_limited(calls):
    semaphore = asyncio.Semaphore(CONCURRENCY)

    async def run(call):
        async with semaphore:
            return await call

    return await asyncio.gather(*(run(c) for c in calls))


def test_json_schema_outputs_that_stop_validate(server):
    schemas = pick_schemas(50)
    assert len(schemas) >= 50

    async def main():
        async with openai.AsyncOpenAI(base_url=f"{server.base_url}/v1", api_key=server.api_key) as client:
            return await gather_limited(
                client.chat.completions.create(
                    model=MODEL,
                    messages=[{"role": "user", "content": f"Write one JSON example for the schema '{name}'."}],
                    response_format={"type": "json_schema", "json_schema": {"name": "out", "schema": schema}},
                    max_tokens=48,
                    temperature=0,
                )
                for name, schema in schemas
            )

    completions = asyncio.run(main())
    finishes = Counter()
    for (name, schema), completion in zip(schemas, completions):
        choice = completion.choices[0]
        finishes[choice.finish_reason] += 1
        if choice.finish_reason == "stop":
            jsonschema.validate(json.loads(choice.message.content), schema)
    print(f"\n{len(schemas)} schemas: {dict(finishes)}")
    assert finishes["stop"] >= 10, finishes


def test_required_tool_calls_name_a_given_tool_with_valid_arguments(server):
    tools = pick_tools(10)
    assert len(tools) == 10

    async def main():
        async with openai.AsyncOpenAI(base_url=f"{server.base_url}/v1", api_key=server.api_key) as client:
            return await gather_limited(
                client.chat.completions.create(
                    model=MODEL,
                    messages=[{"role": "user", "content": f"Use the tool {tool['function']['name']}."}],
                    tools=[tool, tools[(i + 1) % len(tools)]],
                    tool_choice="required",
                    max_tokens=128,
                    temperature=0,
                )
                for i, tool in enumerate(tools)
            )

    completions = asyncio.run(main())
    finished_calls = 0
    for i, completion in enumerate(completions):
        pair = [tools[i], tools[(i + 1) % len(tools)]]
        offered = {tool["function"]["name"]: tool for tool in pair}
        choice = completion.choices[0]
        if choice.finish_reason == "length":
            # max_tokens cut: the complete calls only, never a partial one or its markup (README)
            assert "<tool_call>" not in (choice.message.content or ""), choice
        else:
            assert choice.message.tool_calls, choice
        for call in choice.message.tool_calls or ():
            assert call.function.name in offered
            assert call.id.startswith("call_") and call.type == "function"
            jsonschema.validate(json.loads(call.function.arguments), offered[call.function.name]["function"]["parameters"])
            finished_calls += 1
    finishes = Counter(c.choices[0].finish_reason for c in completions)
    print(f"\n{len(tools)} tool requests: {finished_calls} complete calls, finish reasons {dict(finishes)}")
    assert finished_calls >= 5


def stream_and_whole(client, **kwargs):
    whole = client.chat.completions.create(**kwargs)
    text, calls, finish = "", {}, None
    for chunk in client.chat.completions.create(**kwargs, stream=True):
        for choice in chunk.choices:
            text += choice.delta.content or ""
            for piece in choice.delta.tool_calls or ():
                call = calls.setdefault(piece.index, {"id": piece.id, "name": piece.function.name, "arguments": ""})
                call["arguments"] += piece.function.arguments or ""
            finish = choice.finish_reason or finish
    return whole.choices[0], text, [calls[i] for i in sorted(calls)], finish


WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


def test_streamed_json_output_equals_non_streamed(client):
    schema = {"type": "object", "properties": {"color": {"type": "string", "enum": ["red", "green"]}}, "required": ["color"]}
    whole, text, _, finish = stream_and_whole(
        client, model=MODEL, messages=[{"role": "user", "content": "Pick a color."}], temperature=0, max_tokens=32,
        response_format={"type": "json_schema", "json_schema": {"name": "c", "schema": schema}},
    )
    assert whole.finish_reason == finish == "stop"
    assert text == whole.message.content
    jsonschema.validate(json.loads(text), schema)


def test_streamed_tool_calls_equal_non_streamed(client):
    whole, text, calls, finish = stream_and_whole(
        client, model=MODEL, messages=[{"role": "user", "content": "What is the weather in Paris?"}],
        tools=[WEATHER], tool_choice={"type": "function", "function": {"name": "get_weather"}},
        temperature=0, max_tokens=48,
    )
    assert whole.finish_reason == finish == "stop"  # a named tool_choice ends with "stop", as OpenAI's
    assert whole.message.content is None
    assert [(c["name"], c["arguments"]) for c in calls] == [
        (c.function.name, c.function.arguments) for c in whole.message.tool_calls
    ]
    assert all(c["id"].startswith("call_") for c in calls)
    assert json.loads(calls[0]["arguments"])["city"]


def test_tool_result_continues_the_conversation(client):
    first = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "What is the weather in Paris?"}],
        tools=[WEATHER], tool_choice="required", temperature=0, max_tokens=48,
    )
    call = first.choices[0].message.tool_calls[0]
    follow_up = client.chat.completions.create(
        model=MODEL,
        messages=[
            {"role": "user", "content": "What is the weather in Paris?"},
            {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
            {"role": "tool", "tool_call_id": call.id, "content": '{"temperature_c": 21, "sky": "sunny"}'},
        ],
        tools=[WEATHER], temperature=0, max_tokens=24,
    )
    assert follow_up.choices[0].message.content


def test_tool_without_parameters_gets_empty_arguments(client):
    tool = {"type": "function", "function": {"name": "get_time", "description": "Current time"}}
    completion = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "What time is it?"}],
        tools=[tool], tool_choice="required", temperature=0, max_tokens=32,
    )
    assert completion.choices[0].message.tool_calls[0].function.arguments == "{}"


def test_parallel_tool_calls_false_allows_one_call(client):
    completion = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Weather in Paris and in Rome?"}],
        tools=[WEATHER], tool_choice="required", parallel_tool_calls=False, temperature=0, max_tokens=96,
    )
    assert len(completion.choices[0].message.tool_calls) == 1


def test_unknown_named_tool_and_bad_schema_are_400(client):
    with pytest.raises(openai.BadRequestError) as unknown:
        client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "hi"}], tools=[WEATHER],
            tool_choice={"type": "function", "function": {"name": "nope"}},
        )
    assert unknown.value.body["param"] == "tool_choice"
    with pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "hi"}],
            response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": {"not": {"type": "string"}}}},
        )
    assert bad.value.body["param"].startswith("response_format")
    assert "not" in bad.value.body["message"]


def test_json_object_output_parses(client):
    completion = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Describe a cat in JSON."}],
        response_format={"type": "json_object"}, temperature=0, max_tokens=48,
    )
    choice = completion.choices[0]
    if choice.finish_reason == "stop":
        assert isinstance(json.loads(choice.message.content), dict)
    else:
        assert choice.message.content.startswith("{")
