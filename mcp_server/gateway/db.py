"""The gateway's database: SQLite in the data directory, or PostgreSQL by URL (SQLAlchemy Core).

Usage::

    db = Database.open(data_dir=Path("/var/lib/chatcap"))           # <data dir>/chatcap.db
    db = Database.open(url="postgresql://chatcap@db.internal/chatcap")  # psycopg 3
    with db.transaction() as conn:          # one write transaction (COMMIT, or ROLLBACK on error)
        conn.execute(update(keys)...)
    with db.read() as conn:
        conn.execute(select(keys)...)
    db.close()

Opening creates the tables (:mod:`.schema`) or upgrades older ones (:mod:`.migrate`).

SQLite: ``journal_mode=WAL`` with ``synchronous=FULL``, so a committed transaction survives a
killed process and a power cut (SQLite docs, "Write-Ahead Logging" and "PRAGMA
synchronous"); write transactions start with ``BEGIN IMMEDIATE`` (they queue for the one
writer up to ``busy_timeout``, 30 s, instead of failing on upgrade); several processes on
one host may share the file, never several hosts (WAL needs shared memory).

PostgreSQL: a ``postgresql://`` URL is driven by psycopg 3; transactions run at READ
COMMITTED, and the statements that move money are single-row ``UPDATE``s whose conditions
PostgreSQL re-checks on the locked row, so they stay atomic across any number of replicas.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, RowMapping, create_engine, event, make_url, text
from sqlalchemy.engine import URL

from mcp_server.gateway.migrate import upgrade

__all__ = ["DB_FILE", "Database", "database_url"]

DB_FILE = "chatcap.db"
_WRITE = "chatcap_write"


def database_url(url: str | None = None, data_dir: Path | None = None) -> URL:
    """The SQLAlchemy URL for ``--database-url`` or ``<data_dir>/chatcap.db``.

    ``postgresql://`` and ``postgres://`` mean psycopg 3 (``postgresql+psycopg://``).

    Raises:
        ValueError: neither is given, or the URL does not parse.
    """
    if url:
        try:
            parsed = make_url(url)
        except Exception as exc:  # sqlalchemy.exc.ArgumentError, ValueError
            raise ValueError(f"--database-url {_redact(url)} is not a database URL: {exc}") from None
        if parsed.drivername in ("postgresql", "postgres"):
            parsed = parsed.set(drivername="postgresql+psycopg")
        return parsed
    if data_dir is None:
        raise ValueError("the gateway database needs --data-dir or --database-url")
    return URL.create("sqlite", database=str(data_dir / DB_FILE))


def _redact(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    creds, at, host = rest.rpartition("@")
    return f"{scheme}{sep}{creds.partition(':')[0]}:***@{host}" if at and ":" in creds else url


class Database:
    """A pooled SQLAlchemy engine on the gateway's tables, shared by threads.

    Args:
        engine: an engine whose tables are at the current version (made by :meth:`open`).
    """

    def __init__(self, engine: Engine):
        self.engine = engine
        # SQLite has one writer; threads of this process queue here rather than in SQLite's
        # busy handler, which sleeps in steps of milliseconds. Other processes still wait there.
        self._writer = threading.Lock() if engine.dialect.name == "sqlite" else contextlib.nullcontext()

    @property
    def dialect(self) -> str:
        """``sqlite`` or ``postgresql``."""
        return self.engine.dialect.name

    @classmethod
    def open(cls, data_dir: Path | None = None, *, url: str | None = None, create: bool = True) -> Database:
        """Open the database (``url``, else ``<data_dir>/chatcap.db``) and create or upgrade its tables.

        Args:
            data_dir: the data directory (used when ``url`` is None).
            url: a database URL (``--database-url``).
            create: create the data directory when it is missing (False: a read must not).

        Raises:
            NotADirectoryError: ``data_dir`` exists but is not a directory.
            FileNotFoundError: ``data_dir`` is missing and ``create`` is False.
            ValueError: no location, or a bad URL.
            sqlalchemy.exc.DBAPIError: the database cannot be reached or is not usable.
            RuntimeError: the tables are of a newer version than this code knows.
        """
        if url is None and data_dir is not None:
            if data_dir.exists() and not data_dir.is_dir():
                raise NotADirectoryError(f"the data directory {data_dir} is not a directory")
            if not create and not data_dir.exists():
                raise FileNotFoundError(f"there is no data directory at {data_dir}")
            data_dir.mkdir(parents=True, exist_ok=True)
        location = database_url(url, data_dir)
        if location.get_backend_name() == "sqlite":
            engine = create_engine(
                location, connect_args={"timeout": 30, "check_same_thread": False}, pool_size=8, max_overflow=24
            )
            event.listen(engine, "connect", _sqlite_connect)
            event.listen(engine, "begin", _sqlite_begin)
        else:
            engine = create_engine(location, pool_size=8, max_overflow=24, pool_pre_ping=True)
        db = cls(engine)
        try:
            with db.transaction() as conn:
                upgrade(conn)
        except BaseException:
            engine.dispose()
            raise
        return db

    @contextlib.contextmanager
    def transaction(self, durable: bool = True) -> Iterator[Connection]:
        """Run the block as one write transaction; roll back on error.

        Args:
            durable: False lets SQLite commit without waiting for the disk
                (``synchronous=NORMAL`` for this transaction: a power cut may undo it, never
                half of it; the next durable commit makes it durable too). For what a crash
                may lose anyway: a reservation. PostgreSQL commits every transaction durably.
        """
        with self._writer, self.engine.connect() as conn:
            conn.execution_options(**{_WRITE: True})
            sqlite = conn.connection.dbapi_connection if not durable and self.dialect == "sqlite" else None
            if sqlite is not None:  # on the driver's connection: SQLAlchemy would open a transaction
                sqlite.execute("PRAGMA synchronous=NORMAL")
            try:
                with conn.begin():
                    yield conn
            finally:
                if sqlite is not None:
                    sqlite.execute("PRAGMA synchronous=FULL")

    @contextlib.contextmanager
    def read(self) -> Iterator[Connection]:
        """A connection for reads in autocommit: each statement is its own snapshot, and no
        ``BEGIN``/``ROLLBACK`` round trips are spent (an authentication is one round trip)."""
        with self.engine.connect() as conn:
            conn.execution_options(isolation_level="AUTOCOMMIT")
            yield conn

    def query(self, sql: str, params: dict[str, Any] | None = None) -> list[RowMapping]:
        """Run one SQL statement (named ``:params``) for reports and tests; return its rows."""
        with self.read() as conn:
            return list(conn.execute(text(sql), params or {}).mappings())

    def close(self) -> None:
        """Close the pooled connections (on SQLite, fold the WAL into the main file first)."""
        if self.dialect == "sqlite":
            with contextlib.suppress(Exception), self.engine.connect() as conn:
                conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        self.engine.dispose()


def _sqlite_connect(dbapi_connection, _record) -> None:
    """Per connection: autocommit at the driver (transactions are ours), WAL, FULL sync, foreign keys."""
    dbapi_connection.isolation_level = None
    for pragma in ("journal_mode=WAL", "synchronous=FULL", "foreign_keys=ON", "busy_timeout=30000"):
        dbapi_connection.execute(f"PRAGMA {pragma}")


def _sqlite_begin(conn: Connection) -> None:
    """SQLite write transactions start with ``BEGIN IMMEDIATE`` (take the write lock first);
    reads run in autocommit (:meth:`Database.read`)."""
    if conn.get_execution_options().get(_WRITE):
        conn.exec_driver_sql("BEGIN IMMEDIATE")
