"""``chatcap serve --workers 2``: two worker processes on one port, one store (a data
directory, then PostgreSQL), one Redis.

The model is the SGLang stand-in (:mod:`tests.stream_stand_in`), attached by ``--sglang-url``. Every
response names its worker (``X-Chatcap-Worker``, the pid); requests go out on fresh
connections, so the kernel spreads them over both workers. A price of 100 USD per million
tokens and a 256-token context make credit matter: a request reserves ``100 * (256 + 16)``
micro-dollars and costs ``100 * (10 + 16)``.
"""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import httpx
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from mcp_server.cli import main
from mcp_server.gateway.db import Database
from mcp_server.gateway.keys import KeyStore
from mcp_server.gateway.ledger import Ledger
from tests.live_server import LiveServer, start_server, wait_for_workers
from tests.services import empty_store
from tests.stream_stand_in import MODEL, running_stand_in

CONTEXT = 256
MAX_TOKENS = 16
MAX_COST = 100 * (CONTEXT + MAX_TOKENS)
CREDIT_MICROS = 50_000
WORKER = "x-chatcap-worker"


def test_workers_refuse_an_embedded_model(capsys):
    assert main(["serve", "--workers", "2", "--port", "0"]) == 2
    error = capsys.readouterr().err
    assert "--workers 2" in error and "(at workers)" in error and "--sglang-url" in error


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def workers(request, tmp_path_factory, redis_server):
    """(store location for :meth:`Database.open`, key secrets by name, the server) with two
    workers on one data directory, then on PostgreSQL."""
    location, store_args = empty_store(request, tmp_path_factory)
    store = KeyStore(Database.open(**location))
    secrets = {name: store.create(name, **options)[1] for name, options in [
        ("budget", {"credit_usd": CREDIT_MICROS / 1e6}), ("limited", {"credit_usd": 10, "rpm": 5}),
        ("mcp", {"credit_usd": 10}),
    ]}
    store.db.close()
    with running_stand_in(context_length=CONTEXT) as upstream:
        live = _start_workers(tmp_path_factory.mktemp("workers-logs"), "--engine", "sglang", "--sglang-url", upstream,
                              *store_args, "--redis-url", redis_server.url, "--price", "100,100")
        try:
            yield location, secrets, live
        finally:
            live.stop()


def _start_workers(log_dir: Path, *args: str) -> LiveServer:
    live = start_server(log_dir, "--workers", "2", *args)
    wait_for_workers(live, 2)
    return live


def _fresh_connections() -> httpx.AsyncClient:
    """A client that opens a connection per request (the kernel picks the worker of each)."""
    return httpx.AsyncClient(timeout=120, limits=httpx.Limits(max_keepalive_connections=0))


async def _post(http: httpx.AsyncClient, base_url: str, secret: str, **body) -> httpx.Response:
    return await http.post(f"{base_url}/v1/chat/completions", headers={"Authorization": f"Bearer {secret}"},
                           json={"model": MODEL, "messages": [{"role": "user", "content": "Go."}],
                                 "max_tokens": MAX_TOKENS, **body})


def test_credit_is_exact_across_two_workers(workers):
    location, secrets, live = workers
    gate = asyncio.Semaphore(8)

    async def one(http):
        async with gate:
            return await _post(http, live.base_url, secrets["budget"])

    async def run():
        async with _fresh_connections() as http:
            return await asyncio.gather(*(one(http) for _ in range(40)))

    answers = asyncio.run(run())
    statuses = [a.status_code for a in answers]
    assert set(statuses) == {200, 402}, statuses
    assert len({a.headers[WORKER] for a in answers}) == 2, "one worker took every connection"
    db = Database.open(**location)
    try:
        key = next(k for k in KeyStore(db).list() if k.name == "budget")
        rows = [dict(r) for r in db.query("SELECT * FROM ledger WHERE key_id = :k", {"k": key.id})]
        ledger = Ledger(db)
        assert ledger.audit() == {} and ledger.reserved_micros(key.id) == 0
        balance = KeyStore(db).get(key.id).balance_micros
    finally:
        db.close()
    assert len(rows) == statuses.count(200) and all(r["cost_micros"] == 100 * (10 + MAX_TOKENS) for r in rows)
    assert balance == CREDIT_MICROS - sum(r["cost_micros"] for r in rows)
    assert balance >= -MAX_COST, f"overspent by {-balance} micro-dollars; the bound is one request's {MAX_COST}"


def test_rpm_is_exact_across_two_workers(workers):
    _, secrets, live = workers

    async def run():
        async with _fresh_connections() as http:
            return await asyncio.gather(*(_post(http, live.base_url, secrets["limited"], max_tokens=1)
                                          for _ in range(12)))

    answers = asyncio.run(run())
    assert sorted(a.status_code for a in answers) == [200] * 5 + [429] * 7
    assert len({a.headers[WORKER] for a in answers}) == 2, "one worker took every connection"


def test_a_retried_mcp_tool_call_is_answered_and_billed_once(workers):
    """The official MCP client, a new connection (and session) per call, so a retry may reach
    the other worker; MCP runs stateless there. The key goes in ``_meta`` or in the header."""
    location, secrets, live = workers

    progress: list[float] = []

    async def on_progress(done: float, total: float | None, message: str | None) -> None:
        progress.append(done)

    async def call(meta: dict | None, headers: dict[str, str]):
        http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {secrets['mcp']}", **headers}, timeout=120)
        async with Client(streamable_http_client(f"{live.base_url}/mcp", http_client=http)) as client:
            return await client.call_tool("chat", {"prompt": "Go.", "max_tokens": 4}, meta=meta,
                                          progress_callback=on_progress)

    async def calls():
        return [await call(meta, headers) for meta, headers in [
            ({"idempotency_key": "mcp-1"}, {}), ({"idempotency_key": "mcp-1"}, {}),
            (None, {"Idempotency-Key": "mcp-2"}), (None, {"Idempotency-Key": "mcp-2"}),
            ({"idempotency_key": "mcp-3"}, {"Idempotency-Key": "mcp-2"}),  # _meta wins
            ({"idempotency_key": "two words"}, {}),
        ]]

    first, again, by_header, header_again, by_meta, bad = asyncio.run(calls())
    assert not any(r.is_error for r in (first, again, by_header, header_again, by_meta))
    assert again.structured_content == first.structured_content
    assert header_again.structured_content == by_header.structured_content
    ids = [r.structured_content["completion"]["id"] for r in (first, by_header, by_meta)]
    assert len(set(ids)) == 3
    assert bad.is_error and "_meta.idempotency_key" in bad.content[0].text
    assert progress, "no progress notification came back on the stateless transport"
    db = Database.open(**location)
    try:
        key = next(k for k in KeyStore(db).list() if k.name == "mcp")
        rows = db.query("SELECT completion_id, idempotency_key FROM ledger WHERE key_id = :k", {"k": key.id})
        billed = sorted((r["idempotency_key"], r["completion_id"]) for r in rows)
    finally:
        db.close()
    assert billed == sorted(zip(["mcp-1", "mcp-2", "mcp-3"], ids, strict=True))


def test_sigterm_drains_every_worker(tmp_path):
    """Slow streams on both workers; SIGTERM to the parent lets each one finish."""
    with running_stand_in(delay=0.02, batch=1) as upstream:
        live = _start_workers(tmp_path, "--engine", "sglang", "--sglang-url", upstream)
        try:
            outcome = asyncio.run(_drained_streams(live))
        finally:
            if live.process.poll() is None:
                live.stop()
    (workers_seen, endings), status = outcome, live.process.wait(60)
    assert len(workers_seen) == 2, f"{len(endings)} streams reached one worker only"
    assert endings == [("length", 150, "data: [DONE]")] * len(endings)
    assert status == 0


async def _drained_streams(live) -> tuple[set[str], list[tuple[str, int, str]]]:
    """Opens streams one by one until both workers hold one (the kernel hashes each new
    connection to a worker, so four at once all reach one worker one time in eight), waits
    until both are streaming, sends SIGTERM, and returns the workers seen and each stream's
    (finish_reason, content chunks, last line)."""
    started, seen = asyncio.Event(), set()
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Go."}], "max_tokens": 150, "stream": True}

    async def stream(http: httpx.AsyncClient, opened: asyncio.Event):
        async with http.stream("POST", f"{live.base_url}/v1/chat/completions", json=body) as reply:
            seen.add(reply.headers[WORKER])
            opened.set()
            lines, finish, content = [], None, 0
            async for line in reply.aiter_lines():
                if line.startswith("data: "):
                    lines.append(line)
                    if '" tok"' in line:
                        content += 1
                    if '"finish_reason":"length"' in line.replace(" ", ""):
                        finish = "length"
                    if len(seen) == 2 and content:
                        started.set()
            return finish, content, lines[-1]

    async with _fresh_connections() as http:
        tasks = []
        while len(tasks) < 4 or (len(seen) < 2 and len(tasks) < 32):
            opened = asyncio.Event()
            tasks.append(asyncio.create_task(stream(http, opened)))
            await asyncio.wait_for(opened.wait(), 60)
        await asyncio.wait_for(started.wait(), 60)  # both workers are streaming
        live.process.send_signal(signal.SIGTERM)
        return seen, list(await asyncio.gather(*tasks))


def test_a_worker_that_dies_ends_the_server(tmp_path):
    with running_stand_in() as upstream:
        live = start_server(tmp_path, "--engine", "sglang", "--sglang-url", upstream, "--workers", "2")
        try:
            parent = live.process.pid
            children = [int(pid) for pid in Path(f"/proc/{parent}/task/{parent}/children").read_text().split()]
            assert len(children) == 2
            os.kill(children[0], signal.SIGKILL)
            assert live.process.wait(60) == 128 + signal.SIGKILL
            assert not Path(f"/proc/{children[1]}").exists(), "the other worker outlived the server"
        finally:
            if live.process.poll() is None:
                live.stop()
