"""The real SGLang router (``sglang-router`` 0.3.2) in front of two chatcap replicas.

The replicas share one data directory (SQLite, one host) with priced keys; the router runs
``--policy round_robin --disable-retries`` without a key of its own (the README's recipe
with round robin, its alternative to ``cache_aware``, so that two requests reach both replicas).
It registers each replica through ``/server_info`` and ``/model_info`` and reads its load
from ``/get_load`` (:mod:`mcp_server.surfaces.sglang_worker`).
"""

from __future__ import annotations

import json
import re
import sys
import threading
import time

import httpx
import openai
import pytest

from mcp_server.gateway.db import Database
from mcp_server.gateway.keys import KeyStore
from tests.live_server import free_port, spawn_healthy, start_server, stop_process

pytest.importorskip("sglang_router", reason="sglang-router is a dev dependency (pip install sglang-router==0.3.2)")

MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
PROMPT = [{"role": "user", "content": "Name three colors."}]
TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Weather of a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}}]


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    """The shared data directory and name -> secret: ``paid`` (credit), ``broke`` (none), ``limited`` (1 RPM)."""
    data_dir = tmp_path_factory.mktemp("router-data")
    store = KeyStore(Database.open(data_dir))
    made = {name: store.create(name, credit_usd=credit, rpm=rpm)[1]
            for name, credit, rpm in [("paid", 100, None), ("broke", 0, None), ("limited", 100, 1)]}
    store.db.close()
    return data_dir, made


@pytest.fixture(scope="module")
def replicas(tmp_path_factory, keys):
    data_dir, _ = keys
    logs = tmp_path_factory.mktemp("router-replicas")
    started, errors = [], []

    def start():
        try:
            started.append(start_server(logs, "--data-dir", str(data_dir), "--price", "10,20", "--threads", "1"))
        except RuntimeError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        for live in started:
            live.stop()
        raise errors[0]
    yield started
    for live in started:
        live.stop()


@pytest.fixture(scope="module")
def router(tmp_path_factory, replicas):
    """The router's base URL, once it has registered both replicas."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    command = [
        sys.executable, "-m", "sglang_router.launch_router", "--host", "127.0.0.1", "--port", str(port),
        "--worker-urls", *(r.base_url for r in replicas), "--policy", "round_robin", "--disable-retries",
        # The router probes each worker for gRPC too; chatcap speaks HTTP only, so do not wait long for it.
        "--health-check-timeout-secs", "1",
    ]
    process = spawn_healthy(command, tmp_path_factory.mktemp("router") / "router.log", f"{base}/health", 120)
    try:
        deadline = time.monotonic() + 60
        while len([w for w in workers(base) if w["is_healthy"]]) < 2:
            assert time.monotonic() < deadline, f"the router registered {workers(base)}"
            time.sleep(0.2)
        yield base
    finally:
        stop_process(process)


def workers(base: str) -> list[dict]:
    return httpx.get(f"{base}/workers", timeout=10).json()["workers"]


def chat_requests(replica) -> float:
    """The chat-completion responses a replica has sent, by status (from its /metrics)."""
    text = httpx.get(f"{replica.base_url}/metrics", timeout=10).text
    pattern = r'^chatcap_http_requests_total\{path="/v1/chat/completions",status="(\d+)"\} (\S+)$'
    return {status: float(value) for status, value in re.findall(pattern, text, re.M)}


def test_the_router_registers_both_replicas_under_the_model_id(router, replicas):
    registered = workers(router)
    assert sorted(w["url"] for w in registered) == sorted(r.base_url for r in replicas)
    assert {w["model_id"] for w in registered} == {MODEL}
    assert {w["metadata"]["model_type"] for w in registered} == {"llama"}
    assert [m["id"] for m in httpx.get(f"{router}/v1/models", timeout=10).json()["data"]] == [MODEL]


def test_chat_streaming_and_tools_pass_through_to_both_replicas(router, replicas, keys):
    _, secrets = keys
    before = [chat_requests(r).get("200", 0) for r in replicas]
    client = openai.OpenAI(base_url=f"{router}/v1", api_key=secrets["paid"], max_retries=0)
    whole = client.chat.completions.create(model=MODEL, messages=PROMPT, max_tokens=8, temperature=0)
    assert whole.model == MODEL and whole.choices[0].message.content
    stream = client.chat.completions.create(model=MODEL, messages=PROMPT, max_tokens=8, temperature=0, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == whole.choices[0].message.content
    called = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Weather in Paris?"}], tools=TOOLS,
        tool_choice="required", max_tokens=120, temperature=0,
    )
    call = called.choices[0].message.tool_calls[0]
    assert called.choices[0].finish_reason == "tool_calls" and call.function.name == "get_weather"
    assert set(json.loads(call.function.arguments)) == {"city"}
    after = [chat_requests(r).get("200", 0) for r in replicas]
    assert all(a > b for a, b in zip(after, before, strict=True)), "round robin reached one replica only"


def test_a_keys_402_and_429_pass_through_unretried(router, replicas, keys):
    _, secrets = keys
    body = {"model": MODEL, "messages": PROMPT, "max_tokens": 2}
    broke = httpx.post(f"{router}/v1/chat/completions", json=body, timeout=120,
                       headers={"Authorization": f"Bearer {secrets['broke']}"})
    assert broke.status_code == 402 and broke.json()["error"]["code"] == "insufficient_quota"
    before = sum(chat_requests(r).get("429", 0) for r in replicas)
    answers = [
        httpx.post(f"{router}/v1/chat/completions", json=body, timeout=120,
                   headers={"Authorization": f"Bearer {secrets['limited']}"})
        for _ in range(3)
    ]
    statuses = [a.status_code for a in answers]
    # 1 RPM per replica: each admits one (limits are per process without a shared store).
    assert statuses.count(200) <= 2 and 429 in statuses, statuses
    limited = next(a for a in answers if a.status_code == 429)
    assert limited.json()["error"]["code"] == "rate_limit_exceeded" and int(limited.headers["retry-after"]) >= 1
    refused = sum(chat_requests(r).get("429", 0) for r in replicas) - before
    assert refused == statuses.count(429), "the router retried a 429"
    missing = httpx.post(f"{router}/v1/chat/completions", json=body, timeout=30)
    assert missing.status_code == 401  # no key: the replicas' gateway refuses, the router has none


def test_the_load_is_visible_in_get_load(router, replicas, keys):
    _, secrets = keys
    client = openai.OpenAI(base_url=f"{router}/v1", api_key=secrets["paid"], max_retries=0)
    stream = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Numbers."}], max_tokens=1000, temperature=0, stream=True,
        response_format={"type": "json_schema", "json_schema": {"name": "n", "schema": {
            "type": "array", "items": {"type": "integer"}, "minItems": 300}}},
    )
    try:
        next(iter(stream))
        loads = [httpx.get(f"{r.base_url}/get_load", timeout=10).json() for r in replicas]
        busy = [load[0] for load in loads if load[0]["num_reqs"]]
        assert len(busy) == 1 and busy[0]["num_tokens"] > 0 and busy[0]["dp_rank"] == 0, loads
        seen = httpx.get(f"{router}/get_loads", timeout=10).json()["workers"]
        assert sorted(w["load"] for w in seen)[-1] > 0, seen  # the router reads num_tokens
    finally:
        stream.close()
