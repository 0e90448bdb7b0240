"""End to end over REST: the official ``openai`` client against a live server on loopback."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import openai
import pytest

from mcp_server.capability.schemas import validate

MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
PROMPT = [{"role": "user", "content": "Name three colors."}]


def test_completion_matches_response_schema(client):
    completion = client.chat.completions.create(model=MODEL, messages=PROMPT, max_tokens=12, temperature=0)
    body = completion.model_dump(exclude_unset=True)
    validate("chat-completion-response.json", body)
    choice = completion.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content
    assert choice.finish_reason in ("stop", "length")
    assert completion.usage.completion_tokens <= 12
    assert completion.usage.total_tokens == completion.usage.prompt_tokens + completion.usage.completion_tokens


def test_stream_equals_non_stream_and_reports_usage(client):
    kwargs = dict(model=MODEL, messages=PROMPT, max_tokens=16, temperature=0)
    whole = client.chat.completions.create(**kwargs)
    chunks = list(client.chat.completions.create(**kwargs, stream=True, stream_options={"include_usage": True}))
    for chunk in chunks:
        validate("chat-completion-chunk.json", chunk.model_dump(exclude_unset=True))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == [whole.choices[0].finish_reason]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == whole.usage.completion_tokens


def test_system_fingerprint_names_the_backend_that_answered(client):
    """OpenAI's ``system_fingerprint`` changes with the backend configuration: here the kernels
    (AMX where the CPU has it and the set-up's llama.cpp build runs them) and the KV cache type."""
    from mcp_server import __version__
    from mcp_server.engines.embedded.runners.repack import cpu_has_amx

    kwargs = dict(model=MODEL, messages=PROMPT, max_tokens=4, temperature=0)
    whole = client.chat.completions.create(**kwargs)
    assert whole.system_fingerprint == f"chatcap-{__version__}-llamacpp-{'amx' if cpu_has_amx() else 'cpu'}-q8_0"
    assert {chunk.system_fingerprint for chunk in client.chat.completions.create(**kwargs, stream=True)} == {
        whole.system_fingerprint
    }


def _cached_prompt_tokens(server) -> float:
    text = httpx.get(f"{server.base_url}/metrics", timeout=10).text
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith("chatcap_cached_prompt_tokens_total{"))


def test_a_repeated_prompt_is_served_from_the_prefix_cache_with_the_same_answer(server, client):
    system = {"role": "system", "content": "You answer in one short sentence about the sea."}
    kwargs = dict(model=MODEL, max_tokens=12, temperature=0)
    first = client.chat.completions.create(messages=[system, {"role": "user", "content": "Why is it salty?"}], **kwargs)
    counted = _cached_prompt_tokens(server)
    again = client.chat.completions.create(messages=[system, {"role": "user", "content": "Why is it salty?"}], **kwargs)
    other = client.chat.completions.create(messages=[system, {"role": "user", "content": "Why is it blue?"}], **kwargs)
    reported = again.usage.prompt_tokens_details.cached_tokens + other.usage.prompt_tokens_details.cached_tokens
    assert _cached_prompt_tokens(server) == counted + reported  # the metric counts what usage reports
    assert first.usage.prompt_tokens_details.cached_tokens < first.usage.prompt_tokens - 1
    assert again.usage.prompt_tokens_details.cached_tokens == again.usage.prompt_tokens - 1  # all but the last
    assert again.choices[0].message.content == first.choices[0].message.content
    # The shared system prompt is reused; the question is computed.
    assert 10 < other.usage.prompt_tokens_details.cached_tokens < other.usage.prompt_tokens - 3
    assert other.choices[0].message.content != first.choices[0].message.content


def test_models_list_and_retrieve(client):
    models = client.models.list()
    assert [m.id for m in models.data] == [MODEL]
    assert client.models.retrieve(MODEL).id == MODEL


def test_same_seed_gives_same_text(client):
    kwargs = dict(model=MODEL, messages=PROMPT, max_tokens=16, temperature=1.0, seed=1234)
    first = client.chat.completions.create(**kwargs).choices[0].message.content
    second = client.chat.completions.create(**kwargs).choices[0].message.content
    assert first == second


def test_n_choices_each_finish_once(client):
    completion = client.chat.completions.create(
        model=MODEL, messages=PROMPT, max_tokens=8, temperature=1.0, seed=7, n=2
    )
    assert [c.index for c in completion.choices] == [0, 1]
    assert all(c.finish_reason in ("stop", "length") for c in completion.choices)


def test_stop_string_is_never_emitted(client):
    kwargs = dict(model=MODEL, messages=PROMPT, max_tokens=24, temperature=0)
    full = client.chat.completions.create(**kwargs).choices[0].message.content
    words = full.split()
    assert len(words) > 3, full
    stop = words[2]
    cut = client.chat.completions.create(**kwargs, stop=[stop])
    assert cut.choices[0].finish_reason == "stop"
    assert stop not in cut.choices[0].message.content
    assert full.startswith(cut.choices[0].message.content)
    streamed = "".join(
        c.choices[0].delta.content or ""
        for c in client.chat.completions.create(**kwargs, stop=[stop], stream=True)
        if c.choices
    )
    assert streamed == cut.choices[0].message.content


def test_four_concurrent_streams_complete(server):
    async def one(async_client, i):
        messages = [{"role": "user", "content": f"Count to {i + 3}."}]
        expected = await async_client.chat.completions.create(
            model=MODEL, messages=messages, max_tokens=16, temperature=0
        )
        return expected.choices[0].message.content, messages

    async def stream(async_client, messages):
        text = ""
        async for chunk in await async_client.chat.completions.create(
            model=MODEL, messages=messages, max_tokens=16, temperature=0, stream=True
        ):
            if chunk.choices:
                text += chunk.choices[0].delta.content or ""
        return text

    async def main():
        async with openai.AsyncOpenAI(base_url=f"{server.base_url}/v1", api_key=server.api_key) as async_client:
            singles = [await one(async_client, i) for i in range(4)]
            streamed = await asyncio.gather(*(stream(async_client, m) for _, m in singles))
            return [s for s, _ in singles], streamed

    expected, streamed = asyncio.run(main())
    assert streamed == expected


BAD_REQUESTS = [
    # (body, expected status, param, words the message must contain)
    ({"model": MODEL}, 400, "messages", "messages"),
    ({"model": MODEL, "messages": []}, 400, "messages", "messages"),
    ({"model": MODEL, "messages": [{"role": "wizard", "content": "hi"}]}, 400, "messages[0].role", "wizard"),
    ({"model": MODEL, "messages": PROMPT, "temperature": 3}, 400, "temperature", "temperature"),
    ({"model": MODEL, "messages": PROMPT, "max_tokens": 0}, 400, "max_tokens", "max_tokens"),
    ({"model": MODEL, "messages": PROMPT, "stop": ["a", "b", "c", "d", "e"]}, 400, "stop", "stop"),
    ({"model": "no-such-model", "messages": PROMPT}, 404, "model", "no-such-model"),
    ({"model": MODEL, "messages": PROMPT, "seed": 2**64}, 400, "seed", "seed"),
    ({"model": MODEL, "messages": [{"role": "user", "content": "\ud800"}]}, 400, "messages[0].content", "surrogate"),
    ({"model": "\ud800", "messages": PROMPT}, 400, "model", "surrogate"),
    (
        {"model": MODEL, "messages": PROMPT, "response_format": {
            "type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object", "title": "\udfff"}}}},
        400, "response_format.json_schema.schema.title", "surrogate",
    ),
    ({"model": MODEL, "messages": PROMPT, "top_logprobs": 2}, 400, "top_logprobs", "logprobs is true"),
    ({"model": MODEL, "messages": PROMPT, "logprobs": True, "top_logprobs": 21}, 400, "top_logprobs", "20"),
    ({"model": MODEL, "messages": PROMPT, "tool_choice": "required"}, 400, "tool_choice", "no tools"),
    (
        {"model": MODEL, "messages": PROMPT,
         "tools": [{"type": "function", "function": {"name": "a", "parameters": {"type": "string"}}}]},
        400, "tools[0].function.parameters.type", "object",
    ),
    (
        {"model": MODEL, "messages": PROMPT, "tools": [{"type": "function", "function": {"name": "a"}}],
         "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}, "strict": True}}},
        400, "response_format", "tools",
    ),
]


@pytest.mark.parametrize("body,status,param,words", BAD_REQUESTS, ids=[b[2] + f"-{b[1]}" for b in BAD_REQUESTS])
def test_bad_request_names_the_problem(server, body, status, param, words):
    response = httpx.post(
        f"{server.base_url}/v1/chat/completions", content=json.dumps(body),  # ASCII-escaped, as sent
        headers={"Authorization": f"Bearer {server.api_key}", "Content-Type": "application/json"}, timeout=60,
    )
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["param"] == param
    assert words in error["message"]
    validate("error-response.json", response.json())
    if status == 404:
        assert error["code"] == "model_not_found" and MODEL in error["message"]


def test_malformed_json_is_400(server):
    response = httpx.post(
        f"{server.base_url}/v1/chat/completions", content=b'{"model": ',
        headers={"Authorization": f"Bearer {server.api_key}", "Content-Type": "application/json"},
    )
    assert response.status_code == 400
    assert "JSON" in response.json()["error"]["message"]
    not_json = httpx.post(
        f"{server.base_url}/v1/chat/completions",
        content=b'{"messages": [{"role": "user", "content": "hi"}], "temperature": NaN}',
        headers={"Authorization": f"Bearer {server.api_key}", "Content-Type": "application/json"},
    )
    assert not_json.status_code == 400 and not_json.json()["error"]["code"] == "invalid_json"


def test_wrong_or_missing_key_is_401(server):
    url = f"{server.base_url}/v1/chat/completions"
    body = {"model": MODEL, "messages": PROMPT}
    wrong = httpx.post(url, json=body, headers={"Authorization": "Bearer nope"})
    missing = httpx.post(url, json=body)
    assert wrong.status_code == missing.status_code == 401
    assert "nope" not in wrong.text
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="nope").models.list()


def test_two_authorization_headers_are_401(server):
    response = httpx.get(
        f"{server.base_url}/v1/models",
        headers=[("Authorization", "Bearer other"), ("Authorization", f"Bearer {server.api_key}")],
    )
    assert response.status_code == 401 and "one 'Authorization' header" in response.json()["error"]["message"]


def test_server_keeps_serving_after_bad_requests(server, client):
    for body, *_ in BAD_REQUESTS:
        httpx.post(f"{server.base_url}/v1/chat/completions", content=json.dumps(body),
                   headers={"Authorization": f"Bearer {server.api_key}", "Content-Type": "application/json"})
    completion = client.chat.completions.create(model=MODEL, messages=PROMPT, max_tokens=4, temperature=0)
    assert completion.choices[0].message.content


def test_unknown_path_is_openai_shaped_404(server):
    response = httpx.get(f"{server.base_url}/v1/nothing-here", headers={"Authorization": f"Bearer {server.api_key}"})
    assert response.status_code == 404
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error" and "/v1/nothing-here" in error["message"]


def test_openapi_document_is_served(server):
    document = httpx.get(f"{server.base_url}/openapi.json").json()
    assert document["openapi"].startswith("3.1")
    assert "/v1/chat/completions" in document["paths"]


def test_skills_are_published(server):
    index = httpx.get(f"{server.base_url}/skills").json()
    names = [s["name"] for s in index["skills"]]
    assert "chat-completions" in names
    one = httpx.get(f"{server.base_url}/skills/chat-completions")
    assert one.status_code == 200
    archive = httpx.get(f"{server.base_url}/skills/chat-completions/download")
    assert archive.headers["content-type"] == "application/zip"
    assert archive.content[:2] == b"PK"
    assert httpx.get(f"{server.base_url}/skills/nope").status_code == 404


def test_integral_float_seed_is_the_same_seed(server, client):
    kwargs = dict(model=MODEL, messages=PROMPT, max_tokens=8, temperature=1.0)
    as_int = client.chat.completions.create(**kwargs, seed=42).choices[0].message.content
    response = httpx.post(
        f"{server.base_url}/v1/chat/completions", json={**kwargs, "seed": 42.0},
        headers={"Authorization": f"Bearer {server.api_key}"}, timeout=60,
    )
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"] == as_int


def test_top_p_zero_is_greedy(client):
    greedy = client.chat.completions.create(model=MODEL, messages=PROMPT, max_tokens=8, temperature=0)
    zero = client.chat.completions.create(model=MODEL, messages=PROMPT, max_tokens=8, temperature=1, top_p=0)
    assert zero.choices[0].message.content == greedy.choices[0].message.content
    constrained = client.chat.completions.create(
        model=MODEL, messages=PROMPT, max_tokens=24, top_p=0, response_format={"type": "json_object"}
    )
    assert constrained.choices[0].finish_reason in ("stop", "length")


def test_stop_string_inside_json_cuts_the_answer(client):
    completion = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Give a JSON object with a name."}], max_tokens=32,
        temperature=0, stop=['"'], response_format={"type": "json_object"},
    )
    choice = completion.choices[0]
    assert choice.finish_reason == "stop"
    assert '"' not in choice.message.content and choice.message.content.startswith("{")


def test_a_client_hanging_up_mid_body_leaves_one_log_line_not_a_traceback(server):
    import socket
    from urllib.parse import urlsplit

    address = urlsplit(server.base_url)
    with socket.create_connection((address.hostname, address.port), timeout=10) as raw:
        raw.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            + f"Authorization: Bearer {server.api_key}\r\nContent-Length: 100\r\n\r\n".encode()
            + b'{"messages":'
        )
    for _ in range(100):  # the server notices the hang-up on its own schedule
        if "client hung up during the body" in server.log():
            break
        time.sleep(0.1)
    log = server.log()
    assert "client hung up during the body of POST /v1/chat/completions" in log
    assert "ClientDisconnect" not in log and "Exception in ASGI application" not in log
    assert httpx.get(f"{server.base_url}/health", timeout=30).status_code == 200
