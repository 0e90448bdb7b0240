"""SIGTERM under load: generations still running at the grace get our error shape and are
billed for what their client received (issue 20, F7).

A real server with a data directory, a price and ``--shutdown-grace 2``; two non-streamed and
two streamed requests whose schema forces a long answer (a 4000-character string), so all
four are still generating when the grace ends.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sqlite3

import httpx

from mcp_server.catalog import Price
from mcp_server.gateway.db import DB_FILE, Database
from mcp_server.gateway.keys import KeyStore
from mcp_server.gateway.records import cost_micros
from tests.live_server import start_server

PRICE = Price(10.0, 20.0)
LONG = {
    "messages": [{"role": "user", "content": "Write a long story."}],
    "max_tokens": 1500,
    "logprobs": True,
    "response_format": {"type": "json_schema", "json_schema": {"name": "story", "schema": {
        "type": "object", "properties": {"text": {"type": "string", "minLength": 4000}}, "required": ["text"]}}},
}


async def _plain(http: httpx.AsyncClient, url: str) -> httpx.Response:
    return await http.post(url, json=LONG)


async def _stream(http: httpx.AsyncClient, url: str, started: asyncio.Event) -> tuple[int, list[dict], bool]:
    """(tokens received, per their logprobs; the events after the chunks; whether [DONE] came)."""
    tokens, tail, done = 0, [], False
    async with http.stream("POST", url, json={**LONG, "stream": True}) as response:
        assert response.status_code == 200
        async for line in response.aiter_lines():
            if not line.startswith("data: "):
                continue
            if line == "data: [DONE]":
                done = True
                break
            event = json.loads(line[6:])
            if "error" in event:
                tail.append(event)
                continue
            tokens += sum(len((c.get("logprobs") or {}).get("content") or []) for c in event["choices"])
            if tokens >= 3:
                started.set()
    return tokens, tail, done


def test_sigterm_cuts_at_the_grace_with_our_error_shape_and_bills_what_was_delivered(tmp_path):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    store = KeyStore(Database.open(data_dir))
    record, secret = store.create("term", credit_usd=100)
    store.db.close()
    server = start_server(tmp_path, "--data-dir", str(data_dir), "--price", "10,20", "--shutdown-grace", "2")
    url = f"{server.base_url}/v1/chat/completions"

    async def run():
        async with httpx.AsyncClient(timeout=300, headers={"Authorization": f"Bearer {secret}"}) as http:
            started = [asyncio.Event(), asyncio.Event()]
            streams = [asyncio.create_task(_stream(http, url, event)) for event in started]
            plains = [asyncio.create_task(_plain(http, url)) for _ in range(2)]
            for event in started:
                await asyncio.wait_for(event.wait(), 240)
            server.process.send_signal(signal.SIGTERM)
            return await asyncio.gather(*streams), await asyncio.gather(*plains)

    try:
        streamed, plain = asyncio.run(run())
        assert server.process.wait(60) == 0
    finally:
        if server.process.poll() is None:
            server.stop()
    for response in plain:
        assert response.status_code == 503, response.text
        assert response.json()["error"]["code"] == "server_shutting_down"
    for tokens, tail, done in streamed:
        assert done and [e["error"]["code"] for e in tail] == ["server_shutting_down"]
    with sqlite3.connect(data_dir / DB_FILE) as conn:
        conn.row_factory = sqlite3.Row
        rows = [dict(r) for r in conn.execute("SELECT * FROM ledger WHERE key_id = ?", (record.id,))]
        balance = conn.execute("SELECT balance_micros FROM keys WHERE id = ?", (record.id,)).fetchone()[0]
    assert [(r["status"], r["error_code"]) for r in rows] == [("failed", "server_shutting_down")] * 4
    unsent = [r for r in rows if r["completion_tokens"] == 0]
    assert len(unsent) == 2 and all(r["cost_micros"] == 0 and r["prompt_tokens"] == 0 for r in unsent)
    sent = sorted((r for r in rows if r["completion_tokens"]), key=lambda r: r["completion_tokens"])
    assert [r["completion_tokens"] for r in sent] == sorted(tokens for tokens, _, _ in streamed)
    for row in sent:
        assert row["cost_micros"] == cost_micros(PRICE, row["prompt_tokens"], row["completion_tokens"])
    assert balance == 100_000_000 - sum(r["cost_micros"] for r in rows)
