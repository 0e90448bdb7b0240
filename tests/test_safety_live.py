"""What one caller can do to the others, end to end on loopback (issue 20: F1, F2, F5, F8, F9, F11).

Two servers for the module: ``open_server`` without keys, ``keyed`` with a data directory
(the bundled model's catalog price is 0) and an allowed origin. Both read requests with a
2-second ``--read-timeout``. The SIGTERM deadline (F7) has its own file,
``tests/test_shutdown_deadline.py``.
"""

from __future__ import annotations

import asyncio
import json
import socket
import sqlite3
import threading
import time
from pathlib import Path

import httpx
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from mcp_server.gateway.db import DB_FILE, Database
from mcp_server.gateway.keys import KeyStore
from tests.live_server import LiveServer, start_server
from tests.test_patterns import F1, _chain

READ_TIMEOUT = 2
APP_ORIGIN = "http://app.example"
HI = [{"role": "user", "content": "Say hi."}]


@pytest.fixture(scope="module")
def open_server(tmp_path_factory):
    server = start_server(tmp_path_factory.mktemp("open"), "--read-timeout", str(READ_TIMEOUT))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("safety-data")


@pytest.fixture(scope="module")
def keys(data_dir) -> dict[str, tuple[str, str]]:
    """name -> (key id, secret)."""
    store = KeyStore(Database.open(data_dir))
    made = {name: store.create(name, credit_usd=10, tpm=tpm) for name, tpm in [("a", None), ("b", None), ("tpm", 40)]}
    store.db.close()
    return {name: (record.id, secret) for name, (record, secret) in made.items()}


@pytest.fixture(scope="module")
def keyed(tmp_path_factory, data_dir, keys):
    server = start_server(tmp_path_factory.mktemp("keyed"), "--data-dir", str(data_dir),
                          "--allowed-origins", APP_ORIGIN, "--read-timeout", str(READ_TIMEOUT))
    yield server
    server.stop()


def bearer(keys, name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {keys[name][1]}"}


def chat(server: LiveServer, body: dict, headers: dict | None = None) -> httpx.Response:
    return httpx.post(f"{server.base_url}/v1/chat/completions", json=body, headers=headers or {}, timeout=300)


def with_schema(schema) -> dict:
    return {"messages": HI, "max_tokens": 8,
            "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}}


def with_tool(schema) -> dict:
    return {"messages": HI, "max_tokens": 8,
            "tools": [{"type": "function", "function": {"name": "f", "parameters": schema}}]}


def test_f1_request_gets_400_within_a_second_while_health_keeps_answering(open_server):
    """The issue's bound is 100 ms for /health; measured here generously (1 s) on a shared machine."""
    latencies: list[float] = []
    done = threading.Event()

    def poll_health():
        with httpx.Client(timeout=30) as http:
            while not done.is_set():
                start = time.monotonic()
                assert http.get(f"{open_server.base_url}/health").status_code == 200
                latencies.append(time.monotonic() - start)
                done.wait(0.02)  # leave this process's interpreter to the request being timed

    poller = threading.Thread(target=poll_health)
    poller.start()
    try:
        time.sleep(0.3)
        for body in (with_schema(F1), with_tool({"type": "object", "properties": {"s": F1}})):
            start = time.monotonic()
            response = chat(open_server, body)
            elapsed = time.monotonic() - start
            assert response.status_code == 400, response.text
            assert "'const'" in response.json()["error"]["message"]
            assert elapsed < 1.0
            print(f"\nF1 400 in {elapsed * 1000:.0f} ms", end="")
        time.sleep(0.3)
    finally:
        done.set()
        poller.join()
    print(f"; /health: {len(latencies)} polls, slowest {max(latencies) * 1000:.0f} ms")
    assert latencies and max(latencies) < 1.0


def test_f1_schema_through_the_mcp_chat_tool_is_a_tool_error_naming_const(open_server):
    async def call():
        async with Client(streamable_http_client(f"{open_server.base_url}/mcp",
                                                 http_client=httpx2.AsyncClient(timeout=120))) as client:
            return await client.call_tool("chat", {"prompt": "Say a.", "max_tokens": 8, "response_schema": F1})

    result = asyncio.run(call())
    assert result.is_error and "'const'" in result.content[0].text


F5 = [
    (with_schema(_chain(300)), "nests"),
    (with_schema({"type": "string", "pattern": "(" * 500 + "a" + ")" * 500}), "'pattern'"),
    (with_schema({"type": "string", "pattern": "^a\\Z"}), "\\Z"),
    (with_schema({"type": "string", "pattern": "^\\Aa$"}), "\\A"),
    (with_schema({"type": "string", "pattern": "a\nb"}), "U+000A"),
    (with_schema({"type": "string", "enum": ["abc", "xyz"], "pattern": "^a"}), "'enum'"),
    (with_tool({"type": "object", "properties": {"p": {"type": "string", "pattern": "^a\\Z"}}}), "\\Z"),
]


@pytest.mark.parametrize(("body", "named"), F5)
def test_f5_cases_get_400_naming_the_keyword(open_server, body, named):
    response = chat(open_server, body)
    assert response.status_code == 400, response.text
    assert named in response.json()["error"]["message"]
    assert chat(open_server, {"messages": HI, "max_tokens": 1}).status_code == 200  # the server is fine


def test_f2_eight_concurrent_requests_of_one_key_at_price_0_all_succeed(keyed, keys, data_dir):
    async def run():
        async with httpx.AsyncClient(timeout=300) as http:
            return await asyncio.gather(*[
                http.post(f"{keyed.base_url}/v1/chat/completions", headers=bearer(keys, "a"),
                          json={"messages": HI, "max_tokens": 4, "seed": i}) for i in range(8)
            ])

    responses = asyncio.run(run())
    assert [r.status_code for r in responses] == [200] * 8
    with sqlite3.connect(data_dir / DB_FILE) as conn:
        rows = conn.execute("SELECT status, cost_micros FROM ledger WHERE key_id = ?", (keys["a"][0],)).fetchall()
    assert sorted(rows) == [("completed", 0)] * 8
    metrics = httpx.get(f"{keyed.base_url}/metrics", timeout=10).text
    model = 'model="HuggingFaceTB/SmolLM2-135M-Instruct"'
    assert f"chatcap_in_flight_requests{{{model}}} 0.0" in metrics  # settled with the ledger, nothing leaked
    assert f'chatcap_generations_total{{{model},outcome="completed"}} 8.0' in metrics


def test_f2_tokens_count_against_tpm(keyed, keys):
    """A 40-token-per-minute key: its requests go through until the window holds 40 tokens."""
    statuses = []
    for i in range(6):
        response = chat(keyed, {"messages": HI, "max_tokens": 16, "seed": i}, bearer(keys, "tpm"))
        statuses.append(response.status_code)
        if response.status_code == 429:
            assert "tokens per minute" in response.json()["error"]["message"]
            assert int(response.headers["retry-after"]) >= 1
            break
    assert statuses[-1] == 429 and set(statuses[:-1]) == {200}


def _initialize(server: LiveServer, headers: dict) -> httpx.Response:
    body = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}
    return httpx.post(f"{server.base_url}/mcp", json=body, timeout=60,
                      headers={**headers, "Accept": "application/json, text/event-stream"})


def test_f9_an_mcp_session_answers_only_the_key_that_opened_it(keyed, keys):
    opened = _initialize(keyed, bearer(keys, "a"))
    assert opened.status_code == 200, opened.text
    session = {"Mcp-Session-Id": opened.headers["mcp-session-id"], "Accept": "application/json, text/event-stream",
               "Mcp-Protocol-Version": "2025-06-18"}
    ping = {"jsonrpc": "2.0", "id": 2, "method": "ping"}
    stolen = httpx.post(f"{keyed.base_url}/mcp", json=ping, headers={**bearer(keys, "b"), **session}, timeout=60)
    assert stolen.status_code == 404
    assert stolen.json()["error"]["message"] == "Session not found"
    own = httpx.post(f"{keyed.base_url}/mcp", json=ping, headers={**bearer(keys, "a"), **session}, timeout=60)
    assert own.status_code == 200, own.text


def test_f8_keyless_v1_refuses_foreign_hosts_and_origins(open_server):
    own = open_server.base_url
    tiny = json.dumps({"messages": HI, "max_tokens": 1})
    url = f"{own}/v1/chat/completions"
    rebinding = httpx.post(url, content=tiny, headers={"Host": "evil.example", "Content-Type": "text/plain"})
    assert rebinding.status_code == 421 and rebinding.json()["error"]["param"] == "Host"
    cross_site = httpx.post(url, content=tiny, headers={"Origin": "http://evil.example", "Content-Type": "text/plain"})
    assert cross_site.status_code == 403 and cross_site.json()["error"]["param"] == "Origin"
    assert httpx.get(f"{own}/v1/models", headers={"Origin": "http://evil.example"}).status_code == 403
    same_origin = httpx.post(url, content=tiny, headers={"Origin": own, "Content-Type": "application/json"}, timeout=300)
    assert same_origin.status_code == 200, same_origin.text
    assert httpx.get(f"{own}/health", headers={"Host": "evil.example"}).status_code == 200  # not an API path


def test_f8_with_keys_a_key_passes_and_cors_serves_the_allowed_origin_only(keyed, keys):
    models = f"{keyed.base_url}/v1/models"
    assert httpx.get(models, headers={**bearer(keys, "a"), "Origin": "http://other.example"}).status_code == 200
    preflight = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization,content-type"}
    allowed = httpx.options(f"{keyed.base_url}/v1/chat/completions", headers={**preflight, "Origin": APP_ORIGIN})
    assert allowed.status_code == 200 and allowed.headers["access-control-allow-origin"] == APP_ORIGIN
    refused = httpx.options(f"{keyed.base_url}/v1/chat/completions", headers={**preflight, "Origin": "http://evil.example"})
    assert "access-control-allow-origin" not in refused.headers
    answer = httpx.get(models, headers={**bearer(keys, "a"), "Origin": APP_ORIGIN})
    assert answer.headers["access-control-allow-origin"] == APP_ORIGIN


def _port(server: LiveServer) -> int:
    return int(server.base_url.rsplit(":", 1)[1])


def _read_all(sock: socket.socket) -> bytes:
    received = b""
    while chunk := sock.recv(65536):
        received += chunk
    return received


def test_f11_a_stalled_body_gets_408_and_the_connection_closes(open_server):
    with socket.create_connection(("127.0.0.1", _port(open_server)), timeout=60) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 100\r\n\r\n{\"messages\":")
        answer = _read_all(sock)  # returns once the server closes the connection
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert b"request_timeout" in answer


def test_f11_half_sent_headers_are_cut_after_the_read_timeout(open_server):
    with socket.create_connection(("127.0.0.1", _port(open_server)), timeout=60) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Ty")
        start = time.monotonic()
        assert _read_all(sock) == b""  # closed without an answer
    assert time.monotonic() - start < 30  # the read timeout (2 s), generously


@pytest.mark.parametrize("depth", [480, 5000])
def test_a_body_nested_past_the_bound_gets_400_not_a_recursion_error(open_server, depth):
    schema = '{"type":"object","properties":{"x":' * depth + "{}" + "}}" * depth
    body = ('{"messages":[{"role":"user","content":"hi"}],"max_tokens":2,'
            '"response_format":{"type":"json_schema","json_schema":{"name":"x","schema":' + schema + "}}}")
    response = httpx.post(f"{open_server.base_url}/v1/chat/completions", content=body,
                          headers={"Content-Type": "application/json"}, timeout=60)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] in ("limit_exceeded", "invalid_json")
