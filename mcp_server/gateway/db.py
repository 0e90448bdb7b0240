"""The gateway's SQLite database: one file, ``<data dir>/chatcap.db``, in WAL mode.

Usage::

    db = Database.open(Path("/var/lib/chatcap"))
    with db.transaction() as conn:          # BEGIN IMMEDIATE ... COMMIT (or ROLLBACK)
        conn.execute("UPDATE keys SET ...")
    db.close()

Tables (amounts are integer micro-dollars, ``1 USD = 1_000_000``; times are Unix seconds):

- ``keys``: one row per API key: ``id``, ``name``, ``hash`` (sha256 of the secret),
  ``prefix`` (the first characters, for people to recognise a key), ``balance_micros``,
  ``rpm``/``tpm`` limits (NULL: none), ``created_at``, ``revoked_at``.
- ``credits``: every credit added to a key (creation and top-ups).
- ``ledger``: one row per admitted request (see :mod:`mcp_server.gateway.ledger`).

Invariant, checked by :meth:`Ledger.audit`: for every key,
``balance_micros == sum(credits) - sum(ledger.cost_micros)``.

Durability: ``journal_mode=WAL`` with ``synchronous=FULL``, so a committed transaction
survives a killed process and a power cut (SQLite docs, "Write-Ahead Logging" and
"PRAGMA synchronous"). One connection is shared by every thread behind a lock.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

__all__ = ["DB_FILE", "Database"]

DB_FILE = "chatcap.db"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS keys (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    hash TEXT NOT NULL UNIQUE,
    prefix TEXT NOT NULL,
    balance_micros INTEGER NOT NULL,
    rpm INTEGER,
    tpm INTEGER,
    created_at REAL NOT NULL,
    revoked_at REAL
);
CREATE TABLE IF NOT EXISTS credits (
    id INTEGER PRIMARY KEY,
    key_id TEXT NOT NULL REFERENCES keys(id),
    amount_micros INTEGER NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS ledger (
    id TEXT PRIMARY KEY,
    key_id TEXT REFERENCES keys(id),
    completion_id TEXT,
    model TEXT NOT NULL,
    prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    cost_micros INTEGER NOT NULL,
    latency_ms INTEGER NOT NULL,
    status TEXT NOT NULL,
    error_code TEXT,
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS ledger_key ON ledger(key_id);
CREATE INDEX IF NOT EXISTS credits_key ON credits(key_id);
"""


class Database:
    """A SQLite connection shared by threads, with short write transactions.

    Args:
        conn: an open connection (made by :meth:`open`).
    """

    def __init__(self, conn: sqlite3.Connection):
        self._conn = conn
        self._lock = threading.RLock()

    @classmethod
    def open(cls, data_dir: Path, create: bool = True) -> Database:
        """Open ``<data_dir>/chatcap.db`` and its tables, creating them if needed.

        Args:
            data_dir: the data directory.
            create: create the directory when it is missing (False: a read must not).

        Raises:
            NotADirectoryError: ``data_dir`` exists but is not a directory.
            FileNotFoundError: ``data_dir`` is missing and ``create`` is False.
            sqlite3.DatabaseError: the file exists but is not a usable database.
        """
        if data_dir.exists() and not data_dir.is_dir():
            raise NotADirectoryError(f"the data directory {data_dir} is not a directory")
        if not create and not data_dir.exists():
            raise FileNotFoundError(f"there is no data directory at {data_dir}")
        data_dir.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(data_dir / DB_FILE, isolation_level=None, check_same_thread=False, timeout=30)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.executescript(_SCHEMA)
        return cls(conn)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """Run the block as one write transaction (``BEGIN IMMEDIATE``); roll back on error."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def query(self, sql: str, params: tuple | dict = ()) -> list[sqlite3.Row]:
        """Run a read-only statement and return all its rows."""
        with self._lock:
            return self._conn.execute(sql, params).fetchall()

    def close(self) -> None:
        """Checkpoint the WAL into the main file and close the connection."""
        with self._lock:
            self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self._conn.close()
