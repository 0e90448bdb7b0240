"""The gateway store on SQLite and on a real PostgreSQL, and the rate limits in a real Redis.

In process: two :class:`Database` objects on one database stand for two replicas (each has
its own connection pool and its own ledger with its own replica id).
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import create_engine

from mcp_server.catalog import Price
from mcp_server.cli import main
from mcp_server.errors import EngineUnavailable, InsufficientQuota, InvalidRequest, RateLimited, RequestConflict
from mcp_server.gateway import Gateway, RequestLimits, idempotency_key
from mcp_server.gateway.db import DB_FILE, Database
from mcp_server.gateway.keys import KeyStore
from mcp_server.gateway.ledger import Ledger
from mcp_server.gateway.records import Usage
from mcp_server.gateway.redis_limits import RedisRateLimiter
from mcp_server.gateway.schema import SCHEMA_VERSION
from mcp_server.service import ChatService
from tests.test_gateway import API_PATHS, PRICE, FakeEngine, _request

V1_SCHEMA = Path(__file__).parent / "data" / "gateway_schema_v1.sql"


@pytest.fixture(params=["sqlite", "postgresql"])
def location(request, tmp_path) -> dict:
    """Keyword arguments of :meth:`Database.open` for a fresh, empty database of each kind."""
    if request.param == "sqlite":
        return {"data_dir": tmp_path}
    postgres = request.getfixturevalue("postgres")
    with psycopg.connect(postgres.url, autocommit=True) as conn:  # empty it: one cluster per session
        conn.execute("DROP TABLE IF EXISTS ledger, reservations, credits, keys, schema_version")
    return {"url": postgres.url}


@pytest.fixture
def replicas(location):
    """Two databases on one store, as two replicas have."""
    first, second = Database.open(**location), Database.open(**location)
    yield first, second
    first.close()
    second.close()


@pytest.mark.parametrize("count", [1, 2])
def test_one_or_two_replicas_overdraw_by_at_most_one_max_cost_and_books_balance(replicas, count):
    store = KeyStore(replicas[0])
    key, _ = store.create("bob", credit_usd="0.0001")  # 100 micro-dollars
    ledgers = [Ledger(db) for db in replicas[:count]] * (2 // count)  # 8 threads on each replica's ledger
    admitted = []

    def client(ledger: Ledger):
        for _ in range(20):
            try:
                hold = ledger.reserve(key, 30)
            except InsufficientQuota:
                return
            admitted.append(hold)
            ledger.settle(hold, Usage("m", 1, 1, 30, "completed"))
            ledger.settle(hold, Usage("m", 1, 1, 30, "completed"))  # a second settle does nothing

    threads = [threading.Thread(target=client, args=(ledgers[i % 2],)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(admitted) == 4 and store.get(key.id).balance_micros == 100 - 4 * 30
    assert ledgers[1].audit() == {} and ledgers[0].reserved_micros(key.id) == 0
    assert {hold.id for hold in admitted} == {r["id"] for r in replicas[1].query("SELECT id FROM ledger")}


def test_holds_are_per_request_also_at_price_0(replicas):
    """Issue 20's F2 at its cause: each request holds its own row, so requests of one key
    settling in any order never disturb each other's holds."""
    key, _ = KeyStore(replicas[0]).create("zero", credit_usd="1")
    ledger = Ledger(replicas[0])
    holds = [ledger.reserve(key, 0) for _ in range(4)] + [ledger.reserve(key, 5) for _ in range(2)]
    for hold in reversed(holds):
        ledger.settle(hold, Usage("m", 3, 2, 0, "completed"))
    assert ledger.audit() == {} and ledger.reserved_micros(key.id) == 0
    assert replicas[0].query("SELECT COUNT(*) AS n FROM reservations")[0]["n"] == 0


def test_a_dead_replicas_holds_lapse_and_another_replica_releases_them(replicas):
    now = [1000.0]
    store = KeyStore(replicas[0])
    key, _ = store.create("carl", credit_usd="0.0001")
    dead = Ledger(replicas[0], replica="dead", ttl=10, clock=lambda: now[0])
    alive = Ledger(replicas[1], replica="alive", ttl=10, clock=lambda: now[0])
    dead.reserve(key, 500)  # never settled: its replica is gone
    with pytest.raises(InsufficientQuota, match=r"\$-0.0004"):
        alive.reserve(key, 30)
    now[0] += 9
    alive.renew()
    assert alive.release_expired() == 0
    now[0] += 2
    assert alive.release_expired() == 1 and alive.audit() == {} and alive.reserved_micros(key.id) == 0
    hold = alive.reserve(key, 30)
    now[0] += 11  # a hold that lapsed while its request still ran is charged all the same
    alive.release_expired()
    alive.settle(hold, Usage("m", 1, 1, 20, "completed"))
    assert store.get(key.id).balance_micros == 80 and alive.audit() == {}


def test_a_replica_renews_its_own_holds_only(replicas):
    now = [0.0]
    key, _ = KeyStore(replicas[0]).create("dora", credit_usd="1")
    mine, other = (Ledger(db, replica=name, ttl=10, clock=lambda: now[0]) for db, name in zip(replicas, "ab"))
    mine.reserve(key, 1)
    other.reserve(key, 2)
    now[0] += 8
    assert mine.renew() == 1
    now[0] += 4
    assert other.release_expired() == 1  # b's own hold lapsed; a's was renewed
    assert mine.reserved_micros(key.id) == 1 and mine.audit() == {}


def test_idempotent_request_is_generated_and_charged_once(replicas):
    store = KeyStore(replicas[0])
    key, _ = store.create("erin", credit_usd="1")
    engine = FakeEngine()
    gateways = [Gateway(ChatService(engine), RequestLimits(), API_PATHS, store=KeyStore(db), price=PRICE)
                for db in replicas]

    async def retried():
        first = await gateways[0].complete(_request(), key=key, idempotency_key="abc-1")
        again = await gateways[1].complete(_request(), key=key, idempotency_key="abc-1")
        streamed = [chunk async for chunk in gateways[1].stream(_request(stream=True), key=key,
                                                                idempotency_key="abc-1")]
        return first, again, streamed

    first, again, streamed = asyncio.run(retried())
    assert again == first and engine.calls == 1
    assert streamed[0]["id"] == first["id"] and streamed[0]["choices"][0]["delta"]["content"] == "xxxxx"
    rows = replicas[0].query("SELECT cost_micros, response FROM ledger")
    assert len(rows) == 1 and json.loads(rows[0]["response"]) == first
    assert store.get(key.id).balance_micros == 1_000_000 - rows[0]["cost_micros"]
    assert Ledger(replicas[0]).audit() == {}


def test_a_second_request_with_a_running_idempotency_key_is_409(replicas):
    key, _ = KeyStore(replicas[0]).create("finn", credit_usd="1")
    running = Ledger(replicas[0]).reserve(key, 10, "same")
    with pytest.raises(RequestConflict) as hit:
        Ledger(replicas[1]).reserve(key, 10, "same")
    assert hit.value.status_code == 409 and hit.value.param == "Idempotency-Key"
    other, _ = KeyStore(replicas[0]).create("gus", credit_usd="1")
    Ledger(replicas[1]).reserve(other, 10, "same")  # idempotency keys are per API key
    Ledger(replicas[0]).settle(running, Usage("m", 1, 1, 5, "cancelled"))
    retry = Ledger(replicas[1]).reserve(key, 10, "same")  # a cancelled attempt runs again
    assert retry.replay is None and retry.amount_micros == 10


def test_idempotency_header_is_checked():
    assert idempotency_key([(b"x-request-id", b"r-1")]) == "r-1"
    assert idempotency_key([(b"x-request-id", b"r-1"), (b"idempotency-key", b"k-1")]) == "k-1"
    assert idempotency_key([]) is None
    for headers in ([(b"idempotency-key", b"")], [(b"idempotency-key", b"a b")],
                    [(b"idempotency-key", b"x" * 256)], [(b"idempotency-key", b"a")] * 2):
        with pytest.raises(InvalidRequest) as hit:
            idempotency_key(headers)
        assert hit.value.param == "Idempotency-Key"


def test_version_1_sqlite_file_upgrades_without_losing_a_row(tmp_path):
    old = tmp_path / "old"
    old.mkdir()
    with sqlite3.connect(old / DB_FILE) as conn:
        conn.executescript(V1_SCHEMA.read_text())
        conn.executemany("INSERT INTO keys VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", [
            ("key_a", "a", "h1", "sk-chatcap-aaaa", 9_000_000_000_000_000, 60, None, 1.5, None),
            ("key_b", "b", "h2", "sk-chatcap-bbbb", -70, None, 1000, 2.5, 3.5),
        ])
        conn.executemany("INSERT INTO credits (key_id, amount_micros, created_at) VALUES (?, ?, ?)",
                         [("key_a", 9_000_000_000_000_100, 1.5), ("key_b", 30, 2.5)])
        conn.executemany("INSERT INTO ledger VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", [
            ("req_1", "key_a", "chatcmpl-1", "m", 10, 5, 100, 12, "completed", None, 4.0),
            ("req_2", "key_b", None, "m", 10, 0, 100, 3, "failed", "server_error", 5.0),
            ("req_3", None, "chatcmpl-3", "m", 1, 1, 0, 1, "cancelled", None, 6.0),
        ])
    before = _dump(old / DB_FILE)
    db = Database.open(old)
    assert db.query("SELECT version FROM schema_version")[0]["version"] == SCHEMA_VERSION
    assert Ledger(db).audit() == {}
    db.close()
    after = _dump(old / DB_FILE)
    for table, rows in before.items():
        assert [row[: len(rows[0])] for row in after[table]] == rows, table  # new columns come last
    assert after["keys"][0][-1] == 0 and after["ledger"][0][-3:] == (None, None, None)
    fresh = Database.open(tmp_path / "fresh")
    fresh.close()
    assert _columns(old / DB_FILE) == _columns(tmp_path / "fresh" / DB_FILE)
    db = Database.open(old)  # opening again changes nothing, and the upgraded file works
    ledger = Ledger(db)
    key = KeyStore(db).get("key_a")
    ledger.settle(ledger.reserve(key, 10), Usage("m", 1, 1, 7, "completed"))
    assert ledger.audit() == {} and KeyStore(db).get("key_a").balance_micros == 8_999_999_999_999_993
    db.close()


def _dump(path: Path) -> dict[str, list[tuple]]:
    with sqlite3.connect(path) as conn:
        return {table: conn.execute(f"SELECT * FROM {table} ORDER BY 1").fetchall()
                for table in ("keys", "credits", "ledger")}


def _columns(path: Path) -> dict[str, set[str]]:
    with sqlite3.connect(path) as conn:
        tables = [row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        return {t: {row[1] for row in conn.execute(f"PRAGMA table_info({t})")} for t in tables}


def test_a_newer_schema_is_refused(tmp_path):
    Database.open(tmp_path).close()
    with sqlite3.connect(tmp_path / DB_FILE) as conn:
        conn.execute("UPDATE schema_version SET version = 99")
    with pytest.raises(RuntimeError, match="version 99"):
        Database.open(tmp_path)


def test_keys_cli_works_on_postgresql(postgres, capsys):
    url = ["keys", "--database-url", postgres.url]
    assert main([*url, "create", "hana", "--credit", "2", "--rpm", "5"]) == 0
    out = capsys.readouterr()
    key_id = out.err.split()[0]
    assert main([*url, "top-up", key_id, "0.5"]) == 0 and "$2.5" in capsys.readouterr().out
    assert main([*url, "list"]) == 0 and key_id in capsys.readouterr().out
    assert main([*url, "revoke", key_id]) == 0 and "revoked" in capsys.readouterr().out
    db = Database.open(url=postgres.url)
    assert KeyStore(db).authenticate(out.out.strip()).id == key_id
    db.close()
    assert main(["keys", "--database-url", "postgresql://nobody@127.0.0.1:1/none", "list"]) == 2
    assert "connection" in capsys.readouterr().err.lower()


def test_redis_windows_are_shared_by_replicas_and_exact(redis_server, tmp_path):
    store = KeyStore(Database.open(tmp_path))
    key, _ = store.create("ivan", rpm=5)
    tokens, _ = store.create("jo", tpm=100)
    limiters = [RedisRateLimiter(redis_server.url) for _ in range(2)]

    async def flood():
        results = await asyncio.gather(*(limiters[i % 2].admit(key) for i in range(12)), return_exceptions=True)
        await limiters[0].admit(tokens)
        await limiters[1].record_tokens(tokens, 60)
        await limiters[0].admit(tokens)
        await limiters[1].record_tokens(tokens, 60)
        with pytest.raises(RateLimited, match=r"100 tokens per minute \(120 used\)"):
            await limiters[0].admit(tokens)
        return results

    results = asyncio.run(flood())
    refused = [r for r in results if isinstance(r, RateLimited)]
    assert len(refused) == 7 and results.count(None) == 5
    assert 55 <= refused[0].retry_after <= 60 and refused[0].headers["Retry-After"] == str(refused[0].retry_after)
    for limiter in limiters:
        limiter.close()
    store.db.close()


def test_an_unreachable_database_or_redis_is_503_not_500(tmp_path):
    from tests.live_server import free_port

    closed = free_port()  # nothing listens there
    db = Database.open(tmp_path)
    key, secret = KeyStore(db).create("kim", credit_usd="1", rpm=5)
    gateway = Gateway(ChatService(FakeEngine()), RequestLimits(), API_PATHS, store=KeyStore(db), price=PRICE)
    db.engine.dispose()
    db.engine = create_engine(f"postgresql+psycopg://postgres@127.0.0.1:{closed}/none")
    with pytest.raises(EngineUnavailable) as hit:
        asyncio.run(gateway.authenticate(f"Bearer {secret}"))
    assert hit.value.status_code == 503 and hit.value.code == "database_unavailable"
    limiter = RedisRateLimiter(f"redis://127.0.0.1:{closed}/0")
    with pytest.raises(EngineUnavailable, match="Redis"):
        asyncio.run(limiter.admit(key))
    limiter.close()
