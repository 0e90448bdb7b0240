"""API keys: created, listed, revoked and topped up in the gateway database.

Usage::

    store = KeyStore(Database.open(data_dir))
    record, secret = store.create("alice", credit_usd=5.0, rpm=60, tpm=20_000)
    print(secret)                    # sk-chatcap-...: shown once, never stored
    store.authenticate(secret)       # -> KeyRecord, or None for an unknown secret
    store.top_up(record.id, 2.5)

A secret is ``sk-chatcap-`` plus 32 random bytes (URL-safe base64). Only its sha256 is
stored: for a random 256-bit secret a plain hash is as strong as a slow one, and a lookup
stays one index probe. Code outside this module names a key by its ``id`` (``key_...``);
the secret never goes into a log line or an error message.
"""

from __future__ import annotations

import hashlib
import secrets
import time

from sqlalchemy import exists, insert, select, update

from mcp_server.errors import InvalidRequest
from mcp_server.gateway.db import Database
from mcp_server.gateway.records import MAX_MICROS, KeyRecord, micros_to_usd, usd_to_micros
from mcp_server.gateway.schema import credits, keys

__all__ = ["KEY_PREFIX", "KeyStore"]

KEY_PREFIX = "sk-chatcap-"
_SHOWN_PREFIX = len(KEY_PREFIX) + 4


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


_COLUMNS = [keys.c[name] for name in ("id", "name", "prefix", "balance_micros", "rpm", "tpm", "created_at", "revoked_at")]


class KeyStore:
    """API keys in the gateway database.

    Args:
        db: the open gateway database.
    """

    def __init__(self, db: Database):
        self.db = db

    def create(
        self, name: str, credit_usd: float | str = 0, rpm: int | None = None, tpm: int | None = None
    ) -> tuple[KeyRecord, str]:
        """Create a key with an initial credit.

        Returns:
            The stored record and the secret (``sk-chatcap-...``), which is not kept.

        Raises:
            InvalidRequest: an empty name, a negative or too large credit, or a limit below 1.
        """
        if not name.strip():
            raise InvalidRequest("A key needs a non-empty name.", param="name")
        credit = usd_to_micros(credit_usd)
        if credit < 0:
            raise InvalidRequest("The initial credit must not be negative.", param="credit")
        for param, limit in (("rpm", rpm), ("tpm", tpm)):
            if limit is not None and not 1 <= limit <= MAX_MICROS:
                raise InvalidRequest(f"{param} must be at least 1 (omit it for no limit).", param=param)
        secret = KEY_PREFIX + secrets.token_urlsafe(32)
        key_id = "key_" + secrets.token_hex(6)
        now = time.time()
        with self.db.transaction() as conn:
            conn.execute(insert(keys).values(
                id=key_id, name=name, hash=_hash(secret), prefix=secret[:_SHOWN_PREFIX], balance_micros=credit,
                reserved_micros=0, rpm=rpm, tpm=tpm, created_at=now,
            ))
            conn.execute(insert(credits).values(key_id=key_id, amount_micros=credit, created_at=now))
        return self.get(key_id), secret

    def get(self, key_id: str) -> KeyRecord:
        """Return one key.

        Raises:
            InvalidRequest: no key has this id.
        """
        record = self._one(keys.c.id == key_id)
        if record is None:
            raise InvalidRequest(f"No API key with id '{key_id}'.", param="key_id")
        return record

    def list(self) -> list[KeyRecord]:
        """Every key, oldest first, revoked ones included."""
        with self.db.read() as conn:
            rows = conn.execute(select(*_COLUMNS).order_by(keys.c.created_at)).mappings()
            return [KeyRecord(**row) for row in rows]

    def revoke(self, key_id: str) -> KeyRecord:
        """Revoke a key: it authenticates no more. Revoking twice keeps the first time.

        Raises:
            InvalidRequest: no key has this id.
        """
        self.get(key_id)
        with self.db.transaction() as conn:
            conn.execute(update(keys).where(keys.c.id == key_id, keys.c.revoked_at.is_(None)).values(revoked_at=time.time()))
        return self.get(key_id)

    def top_up(self, key_id: str, usd: float | str) -> KeyRecord:
        """Add credit to a key (recorded in ``credits``, balance raised in the same transaction).

        Raises:
            InvalidRequest: no key has this id, the amount is not positive, or the balance
                would exceed :data:`MAX_MICROS`.
        """
        amount = usd_to_micros(usd)
        if amount <= 0:
            raise InvalidRequest("A top-up must be a positive amount of USD.", param="amount")
        self.get(key_id)
        with self.db.transaction() as conn:
            raised = conn.execute(
                update(keys)
                .where(keys.c.id == key_id, keys.c.balance_micros <= MAX_MICROS - amount)
                .values(balance_micros=keys.c.balance_micros + amount)
                .returning(keys.c.id)
            ).first()
            if raised is None:
                raise InvalidRequest(
                    f"The balance would exceed {micros_to_usd(MAX_MICROS)} USD, the most that is stored exactly.",
                    param="amount",
                )
            conn.execute(insert(credits).values(key_id=key_id, amount_micros=amount, created_at=time.time()))
        return self.get(key_id)

    def authenticate(self, secret: str) -> KeyRecord | None:
        """Return the key whose secret this is (revoked or not), or None."""
        return self._one(keys.c.hash == _hash(secret))

    def has_active_keys(self) -> bool:
        """True when at least one key is not revoked (then ``/v1`` and ``/mcp`` need a key)."""
        with self.db.read() as conn:
            return conn.execute(select(exists().where(keys.c.revoked_at.is_(None)))).scalar_one()

    def has_keys(self) -> bool:
        """True once any key was created, revoked ones included."""
        with self.db.read() as conn:
            return conn.execute(select(exists().select_from(keys))).scalar_one()

    def _one(self, condition) -> KeyRecord | None:
        with self.db.read() as conn:
            row = conn.execute(select(*_COLUMNS).where(condition)).mappings().first()
        return KeyRecord(**row) if row is not None else None
