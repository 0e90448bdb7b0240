"""Benchmark the gateway's cost per request: keys, admission and billing on SQLite and PostgreSQL.

Usage::

    python benchmarks/bench_gateway.py [--requests 300] [--concurrency 1,8] [--database-url URL]

In process, with an engine that answers at once (one token), so what is measured is the
gateway. Per store it runs the same keyed, billed requests (authentication, admission,
settlement), one at a time and ``concurrency`` at once, and reports milliseconds per
request above the same requests with no store (the in-memory gateway: limits and metrics
only), and the database round trips per request: SQL statements plus transaction control
(``BEGIN``/``COMMIT``), counted by SQLAlchemy's events. PostgreSQL is the session's own
``--database-url``, else a fresh local PostgreSQL 15 (``tests/services.py``; needs
``/usr/lib/postgresql/15/bin``). Writes ``benchmarks/results/gateway.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

from sqlalchemy import event

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mcp_server.capability.loader import load_capability  # noqa: E402
from mcp_server.catalog import ModelCard, Price  # noqa: E402
from mcp_server.engines.base import GenerationDelta, GenerationRequest  # noqa: E402
from mcp_server.gateway import Gateway, RequestLimits  # noqa: E402
from mcp_server.gateway.db import Database  # noqa: E402
from mcp_server.gateway.keys import KeyStore  # noqa: E402
from mcp_server.protocol.request import parse_request  # noqa: E402
from mcp_server.service import ChatService  # noqa: E402


class InstantEngine:
    """Answers every request with one token, at once."""

    models = [ModelCard(id="m", context_length=1024)]

    async def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationDelta]:
        yield GenerationDelta("x", 8, 1, "length")


class RoundTrips:
    """Counts what one engine sends the database: statements, and on PostgreSQL the
    ``BEGIN``/``COMMIT``/``ROLLBACK`` of transactions (reads run in autocommit and send none;
    SQLite's ``BEGIN IMMEDIATE`` is counted as a statement, and its calls stay in process)."""

    def __init__(self, db: Database):
        self.count = 0
        event.listen(db.engine, "before_cursor_execute", self._one)
        for name in ("commit", "rollback") if db.dialect == "sqlite" else ("begin", "commit", "rollback"):
            event.listen(db.engine, name, self._control)

    def _one(self, *args, **kwargs) -> None:
        self.count += 1

    def _control(self, conn, *args) -> None:
        if conn.get_execution_options().get("isolation_level") != "AUTOCOMMIT":
            self.count += 1


async def _run(gateway: Gateway, authorization: str | None, requests: int, concurrency: int) -> float:
    """Seconds per request: authenticate + complete, ``concurrency`` at a time."""
    body = parse_request({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 1})
    gate = asyncio.Semaphore(concurrency)

    async def one() -> None:
        async with gate:
            key = await gateway.authenticate(authorization)
            await gateway.complete(body, key=key)

    await one()  # warm up: connections, caches
    start = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(requests)))
    return (time.perf_counter() - start) / requests


def measure(db: Database | None, requests: int, concurrency: int) -> tuple[float, float | None]:
    """(ms per request, database round trips per request) for a gateway on ``db``."""
    store = KeyStore(db) if db is not None else None
    gateway = Gateway(ChatService(InstantEngine()), RequestLimits(), load_capability().api_paths,
                      store=store, price=Price(1.0, 2.0))
    authorization = None
    if store is not None:
        _, secret = store.create("bench", credit_usd=1000)
        authorization = f"Bearer {secret}"
    trips = RoundTrips(db) if db is not None else None
    before = trips.count if trips else 0
    seconds = asyncio.run(_run(gateway, authorization, requests, concurrency))
    per_request = (trips.count - before) / (requests + 1) if trips else None
    return seconds * 1000, per_request


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--concurrency", default="1,8", help="comma-separated")
    parser.add_argument("--database-url", help="a PostgreSQL to use instead of a fresh local one")
    args = parser.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]
    postgres = None
    url = args.database_url
    if url is None:
        from tests.services import start_postgres

        postgres = start_postgres()
        url = postgres.url
    results: dict = {}
    try:
        with tempfile.TemporaryDirectory() as data_dir:
            stores = {"none": None, "sqlite": Database.open(Path(data_dir)), "postgresql": Database.open(url=url)}
            for concurrency in levels:
                for name, db in stores.items():
                    ms, trips = measure(db, args.requests, concurrency)
                    results.setdefault(name, {})[concurrency] = {"ms_per_request": ms, "round_trips": trips}
            for db in stores.values():
                if db is not None:
                    db.close()
    finally:
        if postgres is not None:
            postgres.stop()
    print(f"{'store':<12}" + "".join(f"{'c=' + str(c) + ' ms/req':>16}{'overhead':>10}" for c in levels)
          + f"{'round trips':>13}")
    for name, by_level in results.items():
        row = f"{name:<12}"
        for c in levels:
            ms = by_level[c]["ms_per_request"]
            row += f"{ms:>16.2f}{ms - results['none'][c]['ms_per_request']:>10.2f}"
        trips = by_level[levels[0]]["round_trips"]
        print(row + (f"{trips:>13.1f}" if trips is not None else f"{'-':>13}"))
    out = ROOT / "benchmarks" / "results" / "gateway.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
