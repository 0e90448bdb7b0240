"""The gateway end to end on loopback: keys, 402/429/413, disconnects, fuzzing, load, crash, SIGTERM.

One server (with a data directory and a price) serves the module; the last test kills it
with SIGKILL under load, restarts it on the same data directory, then stops the new one
with SIGTERM. Every request asks for a few tokens; the time is mostly the engine's, so it
grows with whatever else shares the CPUs.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx
import httpx2
import hypothesis
import pytest
import schemathesis
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from mcp_server.catalog import Price
from mcp_server.gateway.db import DB_FILE, Database
from mcp_server.gateway.keys import KeyStore
from mcp_server.gateway.ledger import Ledger
from mcp_server.gateway.records import cost_micros
from tests.live_server import LiveServer, free_port, start_server

PRICE = Price(10.0, 20.0)
SERVER_ARGS = ("--price", "10,20", "--max-request-bytes", "65536", "--shutdown-grace", "20")
PROMPT = [{"role": "user", "content": "Count from one to ten."}]
CREDIT_USD = 100
FUZZ_EXAMPLES = 10


class Books:
    """Reads the server's database as a second process would."""

    def __init__(self, data_dir: Path):
        self.path = data_dir / DB_FILE

    def rows(self, key_id: str) -> list[dict]:
        with sqlite3.connect(self.path) as conn:
            conn.row_factory = sqlite3.Row
            return [dict(r) for r in conn.execute("SELECT * FROM ledger WHERE key_id = ?", (key_id,))]

    def balance(self, key_id: str) -> int:
        with sqlite3.connect(self.path) as conn:
            return conn.execute("SELECT balance_micros FROM keys WHERE id = ?", (key_id,)).fetchone()[0]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("gateway-data")


@pytest.fixture(scope="module")
def keys(data_dir) -> dict[str, tuple[str, str]]:
    """name -> (key id, secret), made before the server starts."""
    store = KeyStore(Database.open(data_dir))
    made = {name: store.create(name, credit_usd=credit, rpm=rpm) for name, credit, rpm in [
        ("load", CREDIT_USD, None), ("disconnect", CREDIT_USD, None), ("fuzz", CREDIT_USD, None),
        ("mcp", CREDIT_USD, None), ("crash", CREDIT_USD, None), ("broke", 0, None), ("limited", CREDIT_USD, 1),
    ]}
    store.db.close()
    return {name: (record.id, secret) for name, (record, secret) in made.items()}


@pytest.fixture(scope="module")
def live(tmp_path_factory, data_dir, keys):
    server = start_server(tmp_path_factory.mktemp("gateway-logs"), "--data-dir", str(data_dir), *SERVER_ARGS)
    yield server
    if server.process.poll() is None:
        server.stop()


def auth(keys, name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {keys[name][1]}"}


def metric(server: LiveServer, name: str) -> float:
    """The value of a metric, added up over its labels (``model``)."""
    text = httpx.get(f"{server.base_url}/metrics", timeout=10).text
    values = re.findall(rf"^{name}(?:\{{[^}}]*\}})? (\S+)$", text, re.M)
    assert f"# TYPE {name} " in text, f"{name} missing from /metrics"
    return sum(map(float, values))


def wait_idle(server: LiveServer, timeout: float = 120) -> float:
    """Wait until nothing is in flight or running; return the seconds it took."""
    start = time.monotonic()
    while metric(server, "chatcap_in_flight_requests") or metric(server, "chatcap_running_requests"):
        assert time.monotonic() - start < timeout, "requests still in flight"
        time.sleep(0.05)
    return time.monotonic() - start


async def stream(client: httpx.AsyncClient, url: str, headers: dict, body: dict, stop_after: int | None = None,
                 started: asyncio.Event | None = None):
    """POST a streaming request; return (status, completion id, outcome) with outcome
    ``done`` ([DONE] seen), ``left`` (we hung up after ``stop_after`` events) or ``error``.
    ``started``, when given, is set on the first event whose delta carries content."""
    async with client.stream("POST", url, json={**body, "stream": True}, headers=headers) as response:
        if response.status_code != 200:
            await response.aread()
            return response.status_code, None, "error"
        completion_id, events = None, 0
        async for line in response.aiter_lines():
            if not line.startswith("data: "):
                continue
            if line == "data: [DONE]":
                return 200, completion_id, "done"
            event = json.loads(line[6:])
            completion_id = completion_id or event.get("id")
            if started is not None and any(c.get("delta", {}).get("content") for c in event.get("choices", [])):
                started.set()
            events += 1
            if stop_after is not None and events >= stop_after:
                return 200, completion_id, "left"
    return 200, completion_id, "cut"


def test_errors_402_429_413_401_use_the_openai_envelope(live, keys):
    url = f"{live.base_url}/v1/chat/completions"
    body = {"messages": PROMPT, "max_tokens": 1}
    broke = httpx.post(url, json=body, headers=auth(keys, "broke"), timeout=600)
    assert broke.status_code == 402 and broke.json()["error"]["code"] == "insufficient_quota"
    assert httpx.post(url, json=body, headers=auth(keys, "limited"), timeout=600).status_code == 200
    limited = httpx.post(url, json=body, headers=auth(keys, "limited"), timeout=600)
    assert limited.status_code == 429 and 1 <= int(limited.headers["retry-after"]) <= 60
    big = {"messages": [{"role": "user", "content": "x" * 70_000}]}
    too_big = httpx.post(url, json=big, headers=auth(keys, "load"), timeout=600)
    assert too_big.status_code == 413 and too_big.json()["error"]["code"] == "request_too_large"
    for response in (broke, limited, too_big, httpx.post(url, json=body, headers={"Authorization": "Bearer sk-x"})):
        assert set(response.json()["error"]) == {"message", "type", "param", "code"}
        assert keys["load"][1] not in response.text and "sk-x" not in response.text
    long = httpx.post(url, json={"messages": PROMPT, "max_tokens": 9000}, headers=auth(keys, "load"), timeout=600)
    assert long.status_code == 400 and "tokens are left" in long.json()["error"]["message"]
    assert keys["load"][1] not in live.log()


def test_disconnect_cancels_the_generation_and_frees_its_slot(live, keys):
    url = f"{live.base_url}/v1/chat/completions"
    headers = auth(keys, "disconnect")
    short = {"messages": PROMPT, "max_tokens": 4, "temperature": 0}

    async def hang_up():
        async with httpx.AsyncClient(timeout=600) as client:
            return await stream(client, url, headers, {"messages": PROMPT, "max_tokens": 2000}, stop_after=3)

    status, completion_id, outcome = asyncio.run(hang_up())
    assert (status, outcome) == (200, "left")
    # The 2000-token generation is dropped, not run to its end: the engine goes idle (the
    # timeout is only a bound for a hang), the ledger row says cancelled with few tokens.
    wait_idle(live, timeout=120)
    assert httpx.post(url, json=short, headers=headers, timeout=600).status_code == 200
    cancelled = [r for r in Books(live_data_dir(live)).rows(keys["disconnect"][0]) if r["completion_id"] == completion_id]
    assert len(cancelled) == 1 and cancelled[0]["status"] == "cancelled"
    assert 0 < cancelled[0]["completion_tokens"] < 100 and cancelled[0]["cost_micros"] > 0


def live_data_dir(server: LiveServer) -> Path:
    args = server.process.args
    return Path(args[args.index("--data-dir") + 1])


def test_mcp_over_http_uses_the_same_keys(live, keys):
    async def call(headers):
        http = httpx2.AsyncClient(headers=headers, timeout=120)
        async with Client(streamable_http_client(f"{live.base_url}/mcp", http_client=http)) as client:
            return await client.call_tool("chat", {"prompt": "Say hi.", "max_tokens": 4})

    result = asyncio.run(call(auth(keys, "mcp")))
    assert not result.is_error
    rows = Books(live_data_dir(live)).rows(keys["mcp"][0])
    assert [r["completion_id"] for r in rows] == [result.structured_content["completion"]["id"]]
    assert httpx.post(f"{live.base_url}/mcp", json={}, headers={"Authorization": "Bearer no"}).status_code == 401


def test_load_32_streams_with_hang_ups_and_bad_requests(live, keys):
    """32 concurrent clients: 20 finish, 6 hang up early, 6 send bad requests."""
    url = f"{live.base_url}/v1/chat/completions"
    key_id, _ = keys["load"]
    good = auth(keys, "load")
    books = Books(live_data_dir(live))
    before = {r["id"] for r in books.rows(key_id)}
    bad = [
        (good, {"messages": PROMPT, "temperature": 5}),
        (good, {"messages": []}),
        ({"Authorization": "Bearer sk-chatcap-wrong"}, {"messages": PROMPT}),
        ({}, {"messages": PROMPT}),
        (good, {"messages": [{"role": "user", "content": "y" * 70_000}]}),
        (auth(keys, "broke"), {"messages": PROMPT}),
    ]

    async def run():
        limits = httpx.Limits(max_connections=64)
        async with httpx.AsyncClient(timeout=600, limits=limits) as client:
            jobs = [stream(client, url, good, {"messages": PROMPT, "max_tokens": 4, "seed": i}) for i in range(20)]
            jobs += [stream(client, url, good, {"messages": PROMPT, "max_tokens": 32}, stop_after=2) for _ in range(6)]
            jobs += [stream(client, url, headers, body) for headers, body in bad]
            return await asyncio.gather(*jobs)

    started = time.monotonic()
    results = asyncio.run(run())
    elapsed = time.monotonic() - started
    wait_idle(live)
    statuses = [status for status, _, _ in results]
    assert all(s < 500 for s in statuses), statuses
    assert sorted(statuses[26:]) == [400, 400, 401, 401, 402, 413]
    assert [o for _, _, o in results[:20]] == ["done"] * 20 and [o for _, _, o in results[20:26]] == ["left"] * 6
    rows = [r for r in books.rows(key_id) if r["id"] not in before]
    by_id = {r["completion_id"]: r for r in rows}
    assert len(by_id) == len(rows) == 26
    assert {cid for _, cid, _ in results[:26]} == set(by_id)
    assert all(by_id[cid]["status"] == "completed" for _, cid, _ in results[:20])
    assert all(by_id[cid]["status"] == "cancelled" for _, cid, _ in results[20:26])
    for row in rows:
        assert row["cost_micros"] == cost_micros(PRICE, row["prompt_tokens"], row["completion_tokens"])
    all_rows = books.rows(key_id)
    assert books.balance(key_id) == CREDIT_USD * 1_000_000 - sum(r["cost_micros"] for r in all_rows)
    tokens = sum(r["completion_tokens"] for r in rows)
    print(f"\nload: 32 clients in {elapsed:.1f} s, {tokens} completion tokens ({tokens / elapsed:.0f} tok/s), "
          f"statuses {sorted(set(statuses))}, 0 server errors")


def test_metrics_are_prometheus_text(live):
    text = httpx.get(f"{live.base_url}/metrics", timeout=10).text
    for name in ("chatcap_http_requests_total", "chatcap_generations_total", "chatcap_prompt_tokens_total",
                 "chatcap_cached_prompt_tokens_total",
                 "chatcap_completion_tokens_total", "chatcap_time_to_first_token_seconds_bucket",
                 "chatcap_request_latency_seconds_bucket", "chatcap_queue_depth", "chatcap_running_requests"):
        assert f"\n{name}" in text, name
    assert 'chatcap_http_requests_total{path="/v1/chat/completions",status="402"}' in text


def test_fuzzed_requests_get_no_5xx_and_answers_match_the_openapi_document(live, keys):
    """schemathesis over every operation of /openapi.json, positive and negative bodies."""
    schema = schemathesis.openapi.from_url(f"{live.base_url}/openapi.json")
    headers = auth(keys, "fuzz")
    checks = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
    for result in schema.get_all_operations():
        operation = result.ok()
        has_body = operation.method.upper() == "POST"
        modes = (GenerationMode.POSITIVE, GenerationMode.NEGATIVE) if has_body else (GenerationMode.POSITIVE,)
        for mode in modes:  # an operation without inputs has no negative cases
            examples = FUZZ_EXAMPLES if has_body else 3

            @hypothesis.settings(max_examples=examples, deadline=None, database=None, derandomize=True,
                                 phases=[hypothesis.Phase.generate], suppress_health_check=list(hypothesis.HealthCheck))
            @hypothesis.given(case=operation.as_strategy(generation_mode=mode))
            def check(case):
                if isinstance(case.body, dict):  # keep generations short: a few tokens, few choices
                    case.body.pop("max_completion_tokens", None)
                    case.body["max_tokens"] = min(_int(case.body.get("max_tokens"), 2), 2)
                    if isinstance(case.body.get("n"), int):
                        case.body["n"] = min(case.body["n"], 2)
                response = case.call(base_url=live.base_url, headers=headers, timeout=600)
                case.validate_response(response, checks=checks, headers=headers)

            check()


def _int(value, default: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def test_sigkill_under_load_loses_no_completed_row_then_sigterm_drains(live, keys, tmp_path):
    url = f"{live.base_url}/v1/chat/completions"
    key_id, _ = keys["crash"]
    headers = auth(keys, "crash")
    completed: list[str] = []

    async def client(http: httpx.AsyncClient, i: int):
        while True:
            try:
                status, cid, outcome = await stream(http, url, headers, {"messages": PROMPT, "max_tokens": 4, "seed": i})
            except httpx.HTTPError:
                return
            if outcome == "done":
                completed.append(cid)

    async def load_then_kill():
        async with httpx.AsyncClient(timeout=600, limits=httpx.Limits(max_connections=32)) as http:
            tasks = [asyncio.create_task(client(http, i)) for i in range(8)]

            async def six_completed():
                while len(completed) < 6:
                    await asyncio.sleep(0.05)

            await asyncio.wait_for(six_completed(), 600)
            os.kill(live.process.pid, signal.SIGKILL)
            await asyncio.gather(*tasks)

    asyncio.run(load_then_kill())
    live.process.wait(10)
    data_dir = live_data_dir(live)
    with sqlite3.connect(data_dir / DB_FILE) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    rows = {r["completion_id"] for r in Books(data_dir).rows(key_id)}
    assert set(completed) <= rows, "a completed request lost its ledger row"
    restarted = start_server(tmp_path, "--data-dir", str(data_dir), *SERVER_ARGS)
    try:
        db = Database.open(data_dir)
        assert Ledger(db).audit() == {}
        db.close()
        drained = asyncio.run(_sigterm_during_streams(restarted, headers))
        exit_code = restarted.process.wait(60)  # after the one SIGTERM, and no other signal
    finally:
        if restarted.process.poll() is None:
            restarted.stop()
    assert exit_code == 0
    assert [outcome for _, _, outcome in drained] == ["done"] * 4
    rows = {r["completion_id"]: r for r in Books(data_dir).rows(key_id)}
    assert all(rows[cid]["status"] == "completed" for _, cid, _ in drained)


async def _sigterm_during_streams(server: LiveServer, headers: dict):
    """Start 4 streams, SIGTERM once each has streamed content, check new connections are refused."""
    url = f"{server.base_url}/v1/chat/completions"
    async with httpx.AsyncClient(timeout=600) as http:
        body = {"messages": [{"role": "user", "content": "Write a long story about a dragon."}], "max_tokens": 256}
        started = [asyncio.Event() for _ in range(4)]
        tasks = [asyncio.create_task(stream(http, url, headers, body, started=event)) for event in started]
        await asyncio.wait_for(asyncio.gather(*(event.wait() for event in started)), 600)
        server.process.send_signal(signal.SIGTERM)
        await asyncio.sleep(0.5)
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{server.base_url}/health", timeout=5)
        return await asyncio.gather(*tasks)


def test_sigterm_during_startup_and_a_repeated_sigterm_both_exit_0(tmp_path):
    """SIGTERM while the model loads stops the server cleanly; so does a second SIGTERM
    sent right after the first (it lands in the drain or in interpreter teardown)."""
    booting = subprocess.Popen(
        [sys.executable, "-m", "mcp_server", "serve", "--port", str(free_port())],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    for line in booting.stdout:
        if "Waiting for application startup" in line:
            break
    booting.send_signal(signal.SIGTERM)
    assert booting.wait(120) == 0
    server = start_server(tmp_path)
    server.process.send_signal(signal.SIGTERM)
    server.process.send_signal(signal.SIGTERM)
    assert server.process.wait(120) == 0
