"""schemas/ and mcp_server.capability.schemas: the seed's examples, real OpenAI-client bodies, 400s, OpenAPI."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import httpx
import openai
import pydantic
import pytest
import yaml
from jsonschema import Draft202012Validator

from mcp_server.capability.schemas import (
    SCHEMAS_DIR,
    bundled_schema,
    load_schema,
    openapi_document,
    schema_names,
    validate,
    validate_instance,
    validate_request,
)
from mcp_server.errors import InvalidRequest

# The published API this project implements, as its authors wrote it (one unquoted line breaks YAML parsers).
SEED = Path(__file__).resolve().parent / "data" / "seed" / "hyperbolic-chat-completions-api-openapi.yml"
USER = {"role": "user", "content": "What is the capital of France?"}
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        "strict": True,
    },
}
COMPLETION = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "created": 1748133600,
    "model": "m",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "Paris."}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 12, "completion_tokens": 2, "total_tokens": 14},
}
CHUNKS = [
    {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
     "choices": [{"index": 0, "delta": {"role": "assistant", "content": "Paris."}, "finish_reason": None}]},
    {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
     "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}], "usage": None},
    {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m", "choices": [],
     "usage": {"prompt_tokens": 12, "completion_tokens": 2, "total_tokens": 14}},
]


def _seed() -> dict[str, Any]:
    text = SEED.read_text(encoding="utf-8")
    # The seed has one unquoted scalar containing ": " (line 236); quote such descriptions.
    fixed = re.sub(
        r"^(\s*description: )([^'\"|>\n].*: .*)$",
        lambda m: m.group(1) + "'" + m.group(2).replace("'", "''") + "'",
        text,
        flags=re.MULTILINE,
    )
    return yaml.safe_load(fixed)


def _examples(content: dict[str, Any]) -> list[Any]:
    return [example["value"] for example in content.get("examples", {}).values()]


class Recorder:
    """An httpx transport that records the JSON bodies the openai client sends."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        self.bodies.append(body)
        if body.get("stream"):
            events = "".join(f"data: {json.dumps(chunk)}\n\n" for chunk in CHUNKS) + "data: [DONE]\n\n"
            return httpx.Response(200, text=events, headers={"content-type": "text/event-stream"})
        completion = dict(COMPLETION)
        if isinstance(body.get("response_format"), dict) and body["response_format"]["type"] == "json_schema":
            message = {"role": "assistant", "content": '{"city": "Paris", "country": "France"}'}
            completion["choices"] = [{"index": 0, "message": message, "finish_reason": "stop"}]
        return httpx.Response(200, json=completion)


@pytest.fixture
def client_and_bodies() -> tuple[openai.OpenAI, list[dict[str, Any]]]:
    recorder = Recorder()
    http_client = httpx.Client(transport=httpx.MockTransport(recorder))
    client = openai.OpenAI(api_key="sk-test", base_url="http://chatcap.test/v1", http_client=http_client)
    return client, recorder.bodies


class City(pydantic.BaseModel):
    city: str
    country: str


def _openai_calls(client: openai.OpenAI) -> None:
    create = client.chat.completions.create
    create(model="m", messages=[USER])
    for _ in create(model="m", messages=[USER], stream=True, stream_options={"include_usage": True}):
        pass
    create(model="m", messages=[USER], tools=[WEATHER_TOOL], tool_choice="auto", parallel_tool_calls=False)
    create(model="m", messages=[USER], tools=[WEATHER_TOOL], tool_choice="required")
    create(model="m", messages=[USER], tools=[WEATHER_TOOL],
           tool_choice={"type": "function", "function": {"name": "get_weather"}})
    create(model="m", messages=[USER], response_format={
        "type": "json_schema",
        "json_schema": {"name": "city", "description": "A city", "strict": True,
                        "schema": {"type": "object", "properties": {"city": {"type": "string"}},
                                   "required": ["city"], "additionalProperties": False}},
    })
    create(model="m", messages=[USER], response_format={"type": "json_object"})
    client.chat.completions.parse(model="m", messages=[USER], response_format=City)
    create(model="m", messages=[
        USER,
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}},
        ]},
        {"role": "tool", "tool_call_id": "call_1", "content": "18 C, sunny"},
        {"role": "assistant", "tool_calls": [
            {"id": "call_2", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}},
        ]},
        {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "no data"}]},
    ], tools=[WEATHER_TOOL])
    create(model="m", messages=[{"role": "user", "content": [
        {"type": "text", "text": "What is in this image?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=", "detail": "low"}},
    ]}])
    create(model="m", messages=[{"role": "developer", "content": "Answer tersely."}, USER])
    create(model="m", messages=[USER], max_completion_tokens=64, logprobs=True, top_logprobs=3, user="u-1",
           seed=7, metadata={"k": "v"}, store=False, stop=["\n\n", "END"], n=2, presence_penalty=0.5,
           frequency_penalty=-0.5, logit_bias={"42": -100}, temperature=0.0, top_p=0.9,
           reasoning_effort="low", extra_body={"top_k": 20, "min_p": 0.05})
    create(model="m", messages=[USER], temperature=None, max_tokens=None)


def test_seed_request_examples_validate() -> None:
    seed = _seed()
    body = seed["paths"]["/chat/completions"]["post"]["requestBody"]["content"]["application/json"]
    examples = _examples(body)
    assert len(examples) == 3
    for example in examples:
        validate_request(example)


def test_seed_response_examples_validate() -> None:
    seed = _seed()
    content = seed["paths"]["/chat/completions"]["post"]["responses"]["200"]["content"]["application/json"]
    examples = _examples(content)
    assert examples
    for example in examples:
        validate("chat-completion-response", example)


def test_openai_client_bodies_validate(client_and_bodies) -> None:
    client, bodies = client_and_bodies
    _openai_calls(client)
    assert len(bodies) == 13
    assert bodies[1]["stream_options"] == {"include_usage": True}
    assert bodies[8]["messages"][1]["content"] is None
    assert bodies[7]["response_format"]["type"] == "json_schema"  # from .parse(response_format=City)
    for body in bodies:
        validate_request(body)


def test_sample_responses_and_chunks_validate() -> None:
    validate("chat-completion-response", COMPLETION)
    for chunk in CHUNKS:
        validate("chat-completion-chunk", chunk)
    tool_turn = {**COMPLETION, "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
        "role": "assistant", "content": None, "reasoning_content": "need weather",
        "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}}]}
    validate("chat-completion-response", tool_turn)
    validate("model-list", {"object": "list", "data": [
        {"id": "m", "object": "model", "created": 0, "owned_by": "chatcap"}]})
    validate("error-response", InvalidRequest("bad", param="temperature").to_dict())


@pytest.mark.parametrize(
    ("body", "param", "words"),
    [
        ({"model": "m"}, "messages", ["messages"]),
        ({"messages": []}, "messages", ["at least 1"]),
        ({"messages": [{"role": "wizard", "content": "hi"}]}, "messages[0].role", ["wizard", "system", "developer"]),
        ({"messages": [USER], "temperature": 3}, "temperature", ["<= 2"]),
        ({"messages": [USER], "max_tokens": 0}, "max_tokens", [">= 1"]),
        ({"messages": [USER], "stop": ["a", "b", "c", "d", "e"]}, "stop", ["at most 4"]),
        ({"messages": [USER], "top_p": 1.5}, "top_p", ["<= 1"]),
        ({"messages": [USER], "n": 0}, "n", [">= 1"]),
        ({"messages": [USER], "presence_penalty": -3}, "presence_penalty", [">= -2"]),
        ({"messages": [USER], "tool_choice": "sometimes"}, "tool_choice", ["auto", "required"]),
        ({"messages": [USER], "tool_choice": {"type": "function", "function": {}}}, "tool_choice.function.name",
         ["name"]),
        ({"messages": [USER], "response_format": {"type": "xml"}}, "response_format.type", ["json_schema"]),
        ({"messages": [USER], "response_format": {"type": "json_schema"}}, "response_format.json_schema", []),
        ({"messages": [{"role": "user"}]}, "messages[0].content", []),
        ({"messages": [{"role": "assistant"}]}, "messages[0].content", []),
        ({"messages": [{"role": "tool", "content": "x"}]}, "messages[0].tool_call_id", []),
        ({"messages": [{"role": "user", "content": [{"type": "video"}]}]}, "messages[0].content[0].type", ["text"]),
    ],
)
def test_bad_request_names_the_field(body: dict[str, Any], param: str, words: list[str]) -> None:
    with pytest.raises(InvalidRequest) as caught:
        validate_request(body)
    assert caught.value.param == param
    assert caught.value.status_code == 400
    assert param in caught.value.message
    for word in words:
        assert word in caught.value.message


def test_unknown_top_level_fields_are_allowed() -> None:
    validate_request({"messages": [USER], "verbosity": "low", "prompt_cache_key": "k", "service_tier": "auto"})


def test_every_schema_file_is_valid_with_id_and_title() -> None:
    names = schema_names()
    assert {"chat-completion-request", "chat-completion-response", "chat-completion-chunk", "error-response",
            "model", "model-list"} <= set(names)
    for name in names:
        schema = load_schema(name)
        Draft202012Validator.check_schema(schema)
        assert schema["$id"].endswith(f"/{name}.json")
        assert schema["title"]


def test_bundled_schema_is_standalone() -> None:
    bundled = bundled_schema("chat-completion-request", drop=("stream", "stream_options"))
    assert "stream" not in bundled["properties"] and "StreamOptions" not in bundled["$defs"]
    refs = re.findall(r'"\$ref": "([^"]+)"', json.dumps(bundled))
    assert refs and all(ref.startswith("#/$defs/") and ref[8:] in bundled["$defs"] for ref in refs)
    Draft202012Validator(bundled).validate({"messages": [USER]})


def test_validate_instance_checks_a_standalone_tool_schema() -> None:
    schema = bundled_schema("chat-tool-input")
    validate_instance(schema, {"prompt": "hi", "response_schema": {"type": "object"}})
    with pytest.raises(InvalidRequest) as caught:
        validate_instance(schema, {"prompt": "hi", "temperature": 9})
    assert caught.value.param == "temperature"
    with pytest.raises(InvalidRequest) as caught:
        validate_instance(schema, {"prompt": "hi", "colour": "red"})
    assert caught.value.param == "colour"


def _resolve_pointer(document: dict[str, Any], ref: str) -> Any:
    node: Any = document
    for part in ref.removeprefix("#/").split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def test_openapi_document_is_self_contained_openapi_31() -> None:
    document = openapi_document()
    assert document["openapi"].startswith("3.1.")
    assert document["info"]["title"] and document["info"]["version"]
    assert document["components"]["securitySchemes"]["BearerAuth"] == {
        **document["components"]["securitySchemes"]["BearerAuth"], "type": "http", "scheme": "bearer"}
    post = document["paths"]["/v1/chat/completions"]["post"]
    assert set(post["responses"]) == {"200", "400", "401", "402", "404", "409", "413", "429", "500", "503"}
    assert {"application/json", "text/event-stream"} <= set(post["responses"]["200"]["content"])
    assert {"/v1/chat/completions", "/v1/models", "/health"} <= set(document["paths"])
    refs = re.findall(r'"\$ref": "([^"]+)"', json.dumps(document))
    assert refs
    for ref in refs:
        assert ref.startswith("#/components/"), ref
        _resolve_pointer(document, ref)
    for name, schema in document["components"]["schemas"].items():
        assert "$id" not in schema, name
        Draft202012Validator.check_schema(schema)
    json.dumps(document)  # serialisable as served at GET /openapi.json


def test_openapi_component_schemas_validate_like_the_files() -> None:
    document = openapi_document()
    request = {"$ref": "#/components/schemas/ChatCompletionRequest", "components": document["components"]}
    validator = Draft202012Validator(request)
    assert validator.is_valid({"messages": [USER]})
    assert not validator.is_valid({"messages": [{"role": "wizard", "content": "x"}]})


def test_schema_files_are_plain_json_in_the_schemas_dir() -> None:
    assert (SCHEMAS_DIR / "openapi.yaml").is_file()
    for path in SCHEMAS_DIR.glob("*.json"):
        assert json.loads(path.read_text(encoding="utf-8"))["$schema"].endswith("2020-12/schema")


def test_openapi_document_describes_every_served_path() -> None:
    from mcp_server.app import create_app
    from mcp_server.settings import Settings

    app = create_app(Settings())  # the engine is built, not started
    served = {re.sub(r"\{(\w+)(:\w+)?\}", r"{\1}", route.path) for route in app.routes}
    assert served == set(openapi_document()["paths"])
