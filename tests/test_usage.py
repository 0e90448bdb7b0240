"""Usage you can read: ``chatcap keys usage`` and the per-request log line, on a real server.

One server with a data directory, a price and an ``--api-key`` (unmetered: its rows have no
key) gets a mix of requests (completed, streamed, failed, cancelled by a hang-up, two keys);
then ``chatcap keys usage`` must equal the ledger summed by SQL, and the log must hold one
line per ledger row, naming the key by id and never by its secret.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
import sys
import time
from decimal import Decimal

import httpx
import pytest

from mcp_server.gateway.db import DB_FILE, Database
from mcp_server.gateway.keys import KeyStore
from tests.live_server import ROOT, start_server

ADMIN = "admin-key-for-usage"
PROMPT = [{"role": "user", "content": "Count from one to ten."}]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("usage-data")
    store = KeyStore(Database.open(data_dir))
    keys = {name: store.create(name, credit_usd=50) for name in ("alice", "bob")}
    store.db.close()
    server = start_server(tmp_path_factory.mktemp("usage-logs"), "--data-dir", str(data_dir), "--price", "10,20",
                          api_key=ADMIN)
    yield server, data_dir, {name: (record.id, secret) for name, (record, secret) in keys.items()}
    server.stop()


def chatcap_usage(data_dir, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mcp_server", "keys", "--data-dir", str(data_dir), "usage", *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)


def ledger_by_sql(data_dir, key_id: str | None = None) -> list[dict]:
    query = ("SELECT key_id, model, COUNT(*) AS requests, SUM(status = 'completed') AS completed, "
             "SUM(status = 'cancelled') AS cancelled, SUM(status = 'failed') AS failed, "
             "SUM(prompt_tokens) AS prompt_tokens, SUM(completion_tokens) AS completion_tokens, "
             "SUM(cost_micros) AS cost_micros FROM ledger" + (" WHERE key_id = ?" if key_id else "")
             + " GROUP BY key_id, model ORDER BY key_id IS NULL, key_id, model")
    with sqlite3.connect(data_dir / DB_FILE) as conn:
        conn.row_factory = sqlite3.Row
        return [dict(row) for row in conn.execute(query, (key_id,) if key_id else ())]


def run_mixed_requests(base_url: str, keys: dict) -> None:
    url = f"{base_url}/v1/chat/completions"

    def auth(secret):
        return {"Authorization": f"Bearer {secret}"}

    async def hang_up(client, secret):
        # A long answer: counting to ten could end before the server saw the hang-up (a busy
        # machine let it finish: a completed row instead of a cancelled one).
        story = [{"role": "user", "content": "Write a long story about a dragon."}]
        async with client.stream("POST", url, headers=auth(secret),
                                 json={"messages": story, "max_tokens": 1500, "stream": True}) as response:
            async for line in response.aiter_lines():
                if line.startswith("data: ") and '"content"' in line:
                    return  # leave mid-answer: a cancelled row

    async def main():
        async with httpx.AsyncClient(timeout=300) as client:
            alice, bob = keys["alice"][1], keys["bob"][1]
            small = {"messages": PROMPT, "max_tokens": 8}
            answers = await asyncio.gather(
                client.post(url, headers=auth(alice), json=small),
                client.post(url, headers=auth(alice), json={**small, "stream": True}),
                client.post(url, headers=auth(alice), json={"messages": PROMPT, "max_tokens": 2040}),  # failed
                client.post(url, headers=auth(bob), json={**small, "response_format": {"type": "json_object"}}),
                client.post(url, headers=auth(ADMIN), json=small),
                client.post(url, headers=auth(bob), json={**small, "nonsense": 1}),  # 400 before admission: no row
            )
            await hang_up(client, bob)
            return [a.status_code for a in answers]

    assert asyncio.run(main()) == [200, 200, 400, 200, 200, 400]


def wait_for_rows(data_dir, count: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while sum(r["requests"] for r in ledger_by_sql(data_dir)) < count:
        assert time.monotonic() < deadline, ledger_by_sql(data_dir)
        time.sleep(0.1)


def test_keys_usage_matches_the_ledger_and_each_request_has_one_log_line(setup):
    server, data_dir, keys = setup
    run_mixed_requests(server.base_url, keys)
    wait_for_rows(data_dir, 6)  # 5 admitted + the hang-up

    report = chatcap_usage(data_dir, "--json")
    assert report.returncode == 0, report.stderr
    totals = json.loads(report.stdout)
    expected = ledger_by_sql(data_dir)
    assert [{k: v for k, v in t.items() if k != "spend_usd"} for t in totals] == expected
    assert {(t["key_id"], t["requests"], t["failed"], t["cancelled"]) for t in totals} == {
        (keys["alice"][0], 3, 1, 0), (keys["bob"][0], 2, 0, 1), (None, 1, 0, 0)}
    alice = next(t for t in totals if t["key_id"] == keys["alice"][0])
    assert alice["cost_micros"] > 0 and Decimal(alice["spend_usd"]) * 1_000_000 == alice["cost_micros"]

    only_bob = json.loads(chatcap_usage(data_dir, keys["bob"][0], "--json").stdout)
    assert [{k: v for k, v in t.items() if k != "spend_usd"} for t in only_bob] == ledger_by_sql(data_dir, keys["bob"][0])
    assert json.loads(chatcap_usage(data_dir, "--since", "2999-01-01", "--json").stdout) == []
    assert json.loads(chatcap_usage(data_dir, "--since", "1h", "--json").stdout) == totals
    table = chatcap_usage(data_dir)
    assert table.returncode == 0 and "(no key)" in table.stdout
    assert any(line.split()[:2] == [keys["alice"][0], "alice"] for line in table.stdout.splitlines())
    unknown = chatcap_usage(data_dir, "key_000000000000")
    assert unknown.returncode == 2 and "key_000000000000" in unknown.stderr
    bad_since = chatcap_usage(data_dir, "--since", "yesterday")
    assert bad_since.returncode == 2 and "--since" in bad_since.stderr

    with sqlite3.connect(data_dir / DB_FILE) as conn:
        rows = conn.execute("SELECT id, key_id, model, status, prompt_tokens, completion_tokens FROM ledger").fetchall()
    log = server.log()
    lines = [line for line in log.splitlines() if " chatcap.requests: request " in line]
    assert len(lines) == len(rows) == 6
    for row_id, key_id, model, status, prompt, completion in rows:
        (line,) = [line for line in lines if f"request {row_id} " in line]
        assert f"key={key_id or '-'} model={model} status={status}" in line
        assert f"prompt_tokens={prompt} completion_tokens={completion} cached_tokens=" in line
        assert " ttft_ms=" in line and " total_ms=" in line
    assert all(secret not in log for _, secret in keys.values()) and ADMIN not in log
