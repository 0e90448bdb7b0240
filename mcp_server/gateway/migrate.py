"""Create the gateway's tables, or upgrade older ones in place, inside one transaction.

:func:`upgrade` runs when a :class:`~mcp_server.gateway.db.Database` opens:

- no tables: create them (:mod:`.schema`) and record :data:`SCHEMA_VERSION`;
- version 1 (the SQLite file of chatcap before the version table: ``keys``, ``credits`` and
  ``ledger`` without ``schema_version``): add ``keys.reserved_micros`` (0), the ledger's
  ``replica``, ``idempotency_key`` and ``response`` columns (NULL), the ``reservations``
  table and the new indexes. No row is rewritten or dropped, so every key, credit and ledger
  row stays as it was. SQLite types are affinities, so version 1's INTEGER and REAL columns
  already hold what BIGINT and DOUBLE PRECISION declare;
- the current version: nothing; a newer one: refused (an older chatcap must not write to it).

Replicas starting together on one PostgreSQL serialize here on a transaction-scoped advisory
lock (SQLite: on ``BEGIN IMMEDIATE``), so the tables are created once.
"""

from __future__ import annotations

from sqlalchemy import Connection, inspect, insert, select, text

from mcp_server.gateway.schema import SCHEMA_VERSION, ledger, metadata, reservations, schema_version

__all__ = ["upgrade"]

_LOCK_ID = 0x63686174636170  # "chatcap": the advisory lock id of this upgrade


def upgrade(conn: Connection) -> int:
    """Bring the tables to :data:`SCHEMA_VERSION` within the caller's transaction.

    Returns:
        The version found before the upgrade (0: an empty database).

    Raises:
        RuntimeError: the database holds a newer version, or tables this code does not
            recognise as an earlier chatcap schema.
    """
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": _LOCK_ID})
    tables = set(inspect(conn).get_table_names())
    if "schema_version" in tables:
        found = conn.execute(select(schema_version.c.version)).scalar_one()
    elif "keys" in tables:
        found = 1
    else:
        found = 0
    if found > SCHEMA_VERSION:
        raise RuntimeError(
            f"the gateway database is at schema version {found}; this chatcap knows up to {SCHEMA_VERSION}"
        )
    if found == 0:
        metadata.create_all(conn)
        conn.execute(insert(schema_version).values(version=SCHEMA_VERSION))
    elif found == 1:
        _upgrade_from_1(conn, tables)
    return found


def _upgrade_from_1(conn: Connection, tables: set[str]) -> None:
    """Version 1 -> 2 (see the module docstring)."""
    missing = {"keys", "credits", "ledger"} - tables
    if missing:
        raise RuntimeError(f"the gateway database has a 'keys' table but no {', '.join(sorted(missing))}")
    conn.execute(text("ALTER TABLE keys ADD COLUMN reserved_micros BIGINT NOT NULL DEFAULT 0"))
    for column in ("replica", "idempotency_key", "response"):
        conn.execute(text(f"ALTER TABLE ledger ADD COLUMN {column} TEXT"))
    schema_version.create(conn)
    reservations.create(conn)
    for index in ledger.indexes:
        index.create(conn, checkfirst=True)
    conn.execute(insert(schema_version).values(version=SCHEMA_VERSION))
