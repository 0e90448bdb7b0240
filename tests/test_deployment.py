"""Deployments: the file's schema follows the flag table, bad files are refused naming the field,
and one ``chatcap serve`` serves the bundled model and a second GGUF side by side."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
import openai
import pytest
import yaml

from mcp_server.capability.schemas import load_schema
from mcp_server.cli import _deployment, build_parser, main
from mcp_server.deployment import deployment_schema, load_deployment, per_model_fields
from mcp_server.errors import InvalidRequest
from mcp_server.settings import Settings, flags
from tests.live_server import start_server

MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
SECOND = "smollm2-q4_0"
PROMPT = [{"role": "user", "content": "Name three colors."}]


def write(tmp_path: Path, data) -> Path:
    path = tmp_path / "deployment.yaml"
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data, encoding="utf-8")
    return path


def test_the_schema_is_generated_from_the_flag_table():
    schema = load_schema("deployment")
    assert schema == deployment_schema()  # `chatcap generate` wrote it
    model = schema["$defs"]["DeployedModel"]["properties"]
    table = {name for name, *_ in flags()} - {"config"}
    assert set(model) == set(per_model_fields()) and set(model) < table
    assert {"model_path", "served_model_name", "engine", "runner", "threads", "context_length", "kv_cache_dtype",
            "max_running_requests", "price", "sglang_url", "sglang_args"} <= set(model)
    assert not {"host", "port", "api_key", "data_dir", "log_level", "cache_dir"} & set(model)
    assert set(schema["properties"]) == table | {"models"}  # the top level takes every flag
    assert model["runner"]["enum"] == ["auto", "llamacpp", "torch"]
    assert model["threads"]["type"] == ["integer", "null"]


@pytest.mark.parametrize(
    "data,param",
    [
        ({"models": [{}, {"threads": "two"}]}, "models[1].threads"),
        ({"models": [{"gpus": 8}]}, "models[0].gpus"),
        ({"models": [{"host": "0.0.0.0"}]}, "models[0].host"),  # a server-wide flag is not per model
        ({"models": [{"runner": "vllm"}]}, "models[0].runner"),
        ({"models": [{"price": [1]}]}, "models[0].price"),
        ({"models": []}, "models"),
        ({"port": "http", "models": [{}]}, "port"),
        ({"model": [{}], "models": [{}]}, "model"),
        ({"model_path": "/m/a.gguf"}, "models"),
        ({"models": [{}, {}]}, "models[1].served_model_name"),  # the bundled model twice
        ({"models": [{"model_path": "/m/a.gguf"}, {"model_path": "/m/a.gguf"}]}, "models[1].served_model_name"),
    ],
)
def test_a_bad_deployment_file_is_refused_naming_the_field(tmp_path, data, param):
    with pytest.raises(InvalidRequest) as caught:
        load_deployment(write(tmp_path, data), Settings())
    assert caught.value.param == param, caught.value.message
    assert str(tmp_path) in caught.value.message


def test_not_yaml_is_refused(tmp_path):
    with pytest.raises(InvalidRequest) as caught:
        load_deployment(write(tmp_path, "models: [\n"), Settings())
    assert caught.value.param == "config" and "not valid YAML" in caught.value.message


def test_precedence_file_then_command_line_then_the_model_entry(tmp_path, monkeypatch):
    monkeypatch.setenv("CHATCAP_THREADS", "3")
    path = write(tmp_path, {
        "port": 9100, "threads": 2, "log_level": "debug", "price": [1, 2],
        "models": [{}, {"model_path": "second.gguf", "served_model_name": "b", "threads": 1, "sglang_args": ["--x"]}],
    })
    (tmp_path / "second.gguf").touch()
    args = build_parser().parse_args(["serve", "--config", str(path), "--log-level", "warning", "--max-running-requests", "4"])
    deployment = _deployment(args)
    server, (first, second) = deployment.server, deployment.models
    assert (server.port, server.log_level, server.threads, server.price) == (9100, "warning", 2, (1.0, 2.0))
    assert (first.model_path, first.threads, first.max_running_requests) == (None, 2, 4)
    assert second.model_path == str(tmp_path / "second.gguf")  # relative to the file
    assert (second.served_model_name, second.threads, second.max_running_requests) == (("b",), 1, 4)
    assert second.sglang_args == ("--x",) and second.port == 9100


def test_repeated_model_paths_are_one_model_each(tmp_path):
    args = build_parser().parse_args(["serve", "--model-path", "/m/a.gguf", "--model-path", "/m/b.gguf", "--threads", "1"])
    deployment = _deployment(args)
    assert [m.model_path for m in deployment.models] == ["/m/a.gguf", "/m/b.gguf"]
    assert {m.threads for m in deployment.models} == {1}
    one = _deployment(build_parser().parse_args(["serve"]))
    assert one.models == (one.server,) and one.server.model_path is None


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--model-path", "/m/a.gguf", "--model-path", "/m/b.gguf", "--served-model-name", "x"], "(at served_model_name)"),
        (["--model-path", "/m/a.gguf", "--model-path", "/m/a.gguf"], "(at model_path[1])"),
        (["--config", "{config}", "--model-path", "/m/a.gguf"], "(at config)"),
        (["--config", "{config}"], "(at models[0].threads)"),
    ],
)
def test_the_command_line_names_the_bad_field(tmp_path, capsys, argv, message):
    config = write(tmp_path, {"models": [{"threads": 0.5}]})
    assert main(["serve", *(a.format(config=config) for a in argv)]) == 2
    assert message in capsys.readouterr().err


# --- two models in one server ---------------------------------------------------------------


@pytest.fixture(scope="session")
def second_gguf(tmp_path_factory) -> Path:
    """The bundled GGUF requantized to Q4_0 (llama.cpp's own quantizer), cached under the
    test tmp root so later sessions reuse it."""
    import llama_cpp

    from mcp_server.engines.embedded.model_files import default_gguf_path

    target = tmp_path_factory.getbasetemp().parent / "chatcap-smollm2-q4_0.gguf"
    if not target.is_file():
        params = llama_cpp.llama_model_quantize_default_params()
        params.ftype = llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_0
        params.allow_requantize = True  # the bundled file is already quantized (Q4_1)
        params.nthread = 1
        partial = target.with_suffix(".partial")
        status = llama_cpp.llama_model_quantize(str(default_gguf_path()).encode(), str(partial).encode(), params)
        assert status == 0, f"llama_model_quantize failed with {status}"
        partial.replace(target)
    return target


@pytest.fixture(scope="module")
def two_models(tmp_path_factory, second_gguf):
    """``chatcap serve --config`` with the bundled model and the Q4_0 copy (one slot only)."""
    folder = tmp_path_factory.mktemp("two-models")
    config = write(folder, {
        "threads": 1,
        "models": [{}, {"model_path": str(second_gguf), "served_model_name": SECOND, "max_running_requests": 1}],
    })
    live = start_server(folder, "--config", str(config))
    yield live
    live.stop()


@pytest.fixture(scope="module")
def two_client(two_models):
    return openai.OpenAI(base_url=f"{two_models.base_url}/v1", api_key="unused", max_retries=0)


def test_both_models_are_listed_and_answer(two_models, two_client):
    assert [m.id for m in two_client.models.list().data] == [MODEL, SECOND]
    for model in (MODEL, SECOND):
        reply = two_client.chat.completions.create(model=model, messages=PROMPT, max_tokens=8, temperature=0)
        assert reply.model == model and reply.choices[0].message.content
        streamed = two_client.chat.completions.create(model=model, messages=PROMPT, max_tokens=8, temperature=0, stream=True)
        assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == reply.choices[0].message.content
    assert httpx.get(f"{two_models.base_url}/health", timeout=10).json()["models"] == [MODEL, SECOND]
    metrics = httpx.get(f"{two_models.base_url}/metrics", timeout=10).text
    for model in (MODEL, SECOND):
        assert f'chatcap_completion_tokens_total{{model="{model}"}}' in metrics
        assert f'chatcap_generations_total{{model="{model}",outcome="completed"}}' in metrics
        assert f'chatcap_running_requests{{model="{model}"}}' in metrics


def test_a_model_that_is_not_served_is_404_listing_the_served_ones(two_client):
    with pytest.raises(openai.NotFoundError) as caught:
        two_client.chat.completions.create(model="gpt-4o", messages=PROMPT, max_tokens=4)
    error = caught.value.body
    assert error["code"] == "model_not_found" and error["param"] == "model"
    assert MODEL in error["message"] and SECOND in error["message"]


def test_a_busy_model_does_not_stall_the_other(two_models, two_client):
    """The second model has one batch slot: with it taken and a request waiting for it, the
    first model still answers (one scheduler each)."""
    long = dict(
        model=SECOND, messages=[{"role": "user", "content": "Numbers."}], max_tokens=1500, temperature=0,
        response_format={"type": "json_schema", "json_schema": {"name": "n", "schema": {
            "type": "array", "items": {"type": "integer"}, "minItems": 400}}},
    )
    holder = two_client.chat.completions.create(**long, stream=True)
    next(iter(holder))  # the slot is taken
    waiting = threading.Thread(target=lambda: two_client.chat.completions.create(**{**long, "max_tokens": 2}))
    waiting.start()
    load = wait_for_load(two_models.base_url, lambda load: load["num_waiting_reqs"] >= 1)
    assert load["num_reqs"] >= 2 and load["num_tokens"] > 0
    busy = httpx.post(f"{two_models.base_url}/flush_cache", timeout=30)
    assert busy.status_code == 400 and "running" in busy.text  # SGLang flushes only while idle
    reply = two_client.chat.completions.create(model=MODEL, messages=PROMPT, max_tokens=8, temperature=0)
    assert reply.choices[0].message.content
    still = httpx.get(f"{two_models.base_url}/get_load", timeout=10).json()[0]
    assert still["num_waiting_reqs"] >= 1, "the first model's answer waited for the second model's slot"
    holder.close()  # cancels the long one; the waiting one gets the slot
    waiting.join(timeout=300)
    assert not waiting.is_alive()
    wait_for_load(two_models.base_url, lambda load: load["num_reqs"] == 0)


def wait_for_load(base_url: str, ready, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        load = httpx.get(f"{base_url}/get_load", timeout=10).json()
        assert len(load) == 1 and load[0]["dp_rank"] == 0
        if ready(load[0]):
            return load[0]
        assert time.monotonic() < deadline, f"load never reached the state: {load}"
        time.sleep(0.05)


def test_sglang_worker_endpoints(two_models, second_gguf):
    base = two_models.base_url
    for path in ("/server_info", "/get_server_info"):
        info = httpx.get(base + path, timeout=10).json()
        assert info["served_model_name"] == MODEL and info["served_models"] == [MODEL, SECOND]
        assert info["model_path"].endswith(".gguf") and info["version"]
    for path in ("/model_info", "/get_model_info"):
        info = httpx.get(base + path, timeout=10).json()
        assert info["is_generation"] is True and info["model_type"] == "llama"
        assert info["model_path"] == info["tokenizer_path"] and info["model_path"].endswith(".gguf")
    wait_for_load(base, lambda load: load["num_reqs"] == 0)
    flushed = httpx.post(base + "/flush_cache", timeout=30)
    assert flushed.status_code == 200, flushed.text
    reply = httpx.post(base + "/v1/chat/completions", timeout=120, json={"model": MODEL, "messages": PROMPT, "max_tokens": 2})
    assert reply.json()["usage"]["prompt_tokens_details"]["cached_tokens"] == 0  # the flushed cache held nothing


def test_the_mcp_tools_offer_the_served_models(two_models):
    import anyio
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client

    async def main():
        async with Client(streamable_http_client(f"{two_models.base_url}/mcp")) as client:
            tools = {t.name: t for t in (await client.list_tools()).tools}
            return {name: tools[name].input_schema["properties"]["model"]["enum"] for name in ("chat", "create-chat-completion")}

    assert anyio.run(main) == {"chat": [MODEL, SECOND], "create-chat-completion": [MODEL, SECOND]}
