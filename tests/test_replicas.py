"""Two ``chatcap serve`` replicas on one store and one Redis: credit, RPM and crashes.

Run twice: on a real PostgreSQL (``--database-url``) and on SQLite (two processes, one data
directory), both with a real Redis (``--redis-url``). A price of 100 USD per million
tokens (100 micro-dollars a token) and a 256-token context make credit matter: a request
reserves ``100 * (256 + max_tokens)`` micro-dollars and costs a fifth of that.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from mcp_server.gateway.db import Database
from mcp_server.gateway.keys import KeyStore
from mcp_server.gateway.ledger import Ledger
from tests.live_server import LiveServer, start_server
from tests.services import empty_store

CONTEXT = 256
MAX_TOKENS = 16
MAX_COST = 100 * (CONTEXT + MAX_TOKENS)
CREDIT_MICROS = 50_000
PROMPT = [{"role": "user", "content": "Name three colors."}]


@pytest.fixture(scope="module", params=["postgresql", "sqlite"])
def cluster(request, tmp_path_factory, redis_server):
    """(store location for :meth:`Database.open`, keys by name, [replica A, replica B])."""
    location, store_args = empty_store(request, tmp_path_factory)
    db = Database.open(**location)
    store = KeyStore(db)
    made = {name: store.create(name, **options) for name, options in [
        ("budget", {"credit_usd": CREDIT_MICROS / 1e6}), ("limited", {"credit_usd": 10, "rpm": 5}),
        ("crash", {"credit_usd": 10}),
    ]}
    db.close()
    keys = {name: (record.id, secret) for name, (record, secret) in made.items()}
    logs = tmp_path_factory.mktemp("replicas-logs")
    args = (*store_args, "--redis-url", redis_server.url, "--price", "100,100", "--context-length", str(CONTEXT),
            "--threads", "1", "--reservation-ttl", "10")
    with ThreadPoolExecutor(2) as pool:
        replicas = list(pool.map(lambda _: start_server(logs, *args), range(2)))
    yield location, keys, replicas
    for replica in replicas:
        if replica.process.poll() is None:
            replica.stop()


def _auth(keys, name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {keys[name][1]}"}


def _books(location: dict, key_id: str) -> tuple[int, list[dict], dict, int]:
    """(balance, ledger rows, audit, reserved) of a key, read as a third process would."""
    db = Database.open(**location)
    try:
        rows = [dict(r) for r in db.query("SELECT * FROM ledger WHERE key_id = :k", {"k": key_id})]
        balance = KeyStore(db).get(key_id).balance_micros
        ledger = Ledger(db)
        return balance, rows, ledger.audit(), ledger.reserved_micros(key_id)
    finally:
        db.close()


async def _post(http: httpx.AsyncClient, replica: LiveServer, headers: dict, **body) -> httpx.Response:
    return await http.post(f"{replica.base_url}/v1/chat/completions", headers=headers,
                           json={"messages": PROMPT, "max_tokens": MAX_TOKENS, "temperature": 0, **body})


def test_40_concurrent_requests_on_two_replicas_overspend_at_most_one_max_cost(cluster):
    location, keys, replicas = cluster
    key_id, _ = keys["budget"]
    headers = _auth(keys, "budget")
    gate = asyncio.Semaphore(8)

    async def one(http, i):
        async with gate:
            return await _post(http, replicas[i % 2], headers, seed=i)

    async def run():
        async with httpx.AsyncClient(timeout=300) as http:
            return await asyncio.gather(*(one(http, i) for i in range(40)))

    answers = asyncio.run(run())
    statuses = [a.status_code for a in answers]
    assert set(statuses) <= {200, 402}, statuses
    served = [a.json()["id"] for a in answers if a.status_code == 200]
    assert served and 402 in statuses
    balance, rows, audit, reserved = _books(location, key_id)
    assert audit == {} and reserved == 0
    assert balance >= -MAX_COST, f"overspent by {-balance} micro-dollars; the bound is one request's {MAX_COST}"
    assert sorted(r["completion_id"] for r in rows) == sorted(served)
    assert balance == CREDIT_MICROS - sum(r["cost_micros"] for r in rows)


def test_rpm_is_exact_across_replicas(cluster):
    _, keys, replicas = cluster
    headers = _auth(keys, "limited")

    async def run():
        async with httpx.AsyncClient(timeout=300) as http:
            return await asyncio.gather(*(_post(http, replicas[i % 2], headers, max_tokens=1) for i in range(12)))

    statuses = sorted(a.status_code for a in asyncio.run(run()))
    assert statuses == [200] * 5 + [429] * 7


def test_a_retry_on_the_other_replica_is_answered_and_billed_once(cluster):
    location, keys, replicas = cluster
    headers = {**_auth(keys, "crash"), "Idempotency-Key": "retry-1"}
    crash_id, _ = keys["crash"]

    async def retried():
        async with httpx.AsyncClient(timeout=300) as http:
            first = await _post(http, replicas[0], headers)
            again = await _post(http, replicas[1], headers)
            bad = await _post(http, replicas[1], {**headers, "Idempotency-Key": "two words"})
            async with http.stream("POST", f"{replicas[1].base_url}/v1/chat/completions", headers=headers,
                                   json={"messages": PROMPT, "max_tokens": MAX_TOKENS, "stream": True}) as stream:
                events = [line async for line in stream.aiter_lines() if line.startswith("data: ")]
            return first, again, bad, events

    first, again, bad, events = asyncio.run(retried())
    assert first.status_code == again.status_code == 200 and again.json() == first.json()
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "Idempotency-Key"
    assert events[-1] == "data: [DONE]" and first.json()["id"] in events[0]
    _, rows, audit, _ = _books(location, crash_id)
    assert audit == {} and [r["completion_id"] for r in rows] == [first.json()["id"]]


def test_a_sigkilled_replicas_hold_expires_and_nothing_is_lost(cluster):
    location, keys, replicas = cluster
    doomed, survivor = replicas
    key_id, _ = keys["crash"]
    headers = _auth(keys, "crash")

    async def kill_mid_stream():
        async with httpx.AsyncClient(timeout=300) as http:
            done = await _post(http, doomed, headers)
            assert done.status_code == 200
            # Greedy: this prompt's answer is ~100 tokens; a sampled one may end (and settle) before the kill.
            body = {"messages": [{"role": "user", "content": "Count from one to two hundred."}],
                    "max_tokens": 200, "stream": True, "temperature": 0}
            async with http.stream("POST", f"{doomed.base_url}/v1/chat/completions", headers=headers,
                                   json=body) as response:
                async for line in response.aiter_lines():
                    if '"content"' in line:
                        os.kill(doomed.process.pid, signal.SIGKILL)
                        break
            return done.json()["id"]

    earlier = {r["completion_id"] for r in _books(location, key_id)[1]}
    completed_id = asyncio.run(kill_mid_stream())
    doomed.process.wait(30)
    _, _, audit, reserved = _books(location, key_id)
    # The dead replica's hold is still there: renewed every 10/3 s, it lapses at least 6.7 s after
    # the kill (with a 3 s TTL a slow machine saw it lapse before this read).
    assert audit == {} and reserved == 100 * (CONTEXT + 200)
    deadline = time.monotonic() + 60
    while reserved:
        assert time.monotonic() < deadline, "the dead replica's reservation never lapsed"
        time.sleep(0.5)
        _, _, audit, reserved = _books(location, key_id)
    balance, rows, audit, _ = _books(location, key_id)
    assert audit == {} and {r["completion_id"] for r in rows} == earlier | {completed_id}
    assert balance == 10_000_000 - sum(r["cost_micros"] for r in rows)
    answer = asyncio.run(_once(survivor, headers))
    assert answer.status_code == 200
    assert _books(location, key_id)[2] == {}


async def _once(replica: LiveServer, headers: dict) -> httpx.Response:
    async with httpx.AsyncClient(timeout=300) as http:
        return await _post(http, replica, headers)
