"""The usage ledger: reserve a request's maximum cost up front, settle its real cost at the end.

Usage::

    ledger = Ledger(db, replica="host-1234", ttl=30.0)
    ledger.start_keeper()                               # renews this replica's holds, frees lapsed ones
    hold = ledger.reserve(key, max_cost_micros)        # InsufficientQuota when no credit left
    ...generate...
    ledger.settle(hold, Usage(model, 12, 8, cost, "completed"))   # latency: measured from reserve()
    ledger.close()

The billing rule:

1. **Admission.** A request is admitted when its key's *available* credit, the stored
   balance minus the reservations of its requests still running (``keys.reserved_micros``),
   is above zero (or the request cannot cost anything: a price of 0); otherwise it is refused
   with 402 ``insufficient_quota`` before any generation. An admitted request reserves its
   maximum cost: the price of a whole context of prompt plus ``n * max_tokens`` completion
   tokens (the context when ``max_tokens`` is unset). Check and hold are one statement on the key's row (``UPDATE keys SET
   reserved_micros = reserved_micros + :cost WHERE id = :key AND balance_micros -
   reserved_micros > 0 RETURNING ...``) with the ``INSERT`` of the request's ``reservations``
   row (PostgreSQL: one ``WITH`` statement), so every replica sees every other's holds.
2. **Settlement.** When the request ends (completed, failed, or cancelled by its client)
   one transaction (PostgreSQL: one statement) deletes its reservation, inserts its ledger
   row, subtracts its real cost from the balance and its hold from ``reserved_micros``. A
   request cut short pays for the tokens it got.
3. **Consequences.** The last request admitted saw available credit > 0 and costs at most
   its reservation, so a balance never goes below minus one request's maximum cost,
   whatever the number of replicas. Every reservation is its own row, keyed by the request
   (also at price 0, where it holds nothing), settles once (a second call does nothing),
   and the ledger row's primary key is the reservation id, so no request is charged twice.
4. **Crashes.** A reservation carries its replica and an expiry ``ttl`` seconds ahead; the
   replica's keeper thread renews its holds every ``ttl / 3`` seconds and releases every
   hold that lapsed (a replica that died). A request its replica never settled leaves
   neither a ledger row nor a charge; every committed row survives.
5. **Idempotency.** A request may carry an idempotency key (the ``Idempotency-Key`` or
   ``X-Request-Id`` header). ``reservations (key_id, idempotency_key)`` is unique, so a
   second request with the same key while the first runs is refused (409); once the first
   completed, its stored answer is returned again and nothing is charged (see
   :mod:`mcp_server.gateway.idempotency`). A failed or cancelled attempt stores no answer:
   a retry runs, and each attempt pays for the tokens it generated.

Requests without a key (open mode, or the single ``--api-key``) hold nothing and are
recorded with ``key_id`` NULL.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
import time
from collections import defaultdict
from collections.abc import Callable

from sqlalchemy import BigInteger, Double, delete, func, insert, literal, select, update
from sqlalchemy.exc import IntegrityError, OperationalError

from mcp_server.errors import InsufficientQuota, RequestConflict
from mcp_server.gateway.db import Database
from mcp_server.gateway.records import KeyRecord, Reservation, Usage, micros_to_usd
from mcp_server.gateway.schema import credits, keys, ledger, reservations

__all__ = ["Ledger", "replica_id"]

logger = logging.getLogger("chatcap.gateway")
_SETTLE_TRIES = 5


def replica_id() -> str:
    """A name for this process among the replicas: ``<host>-<pid>-<6 hex>``."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


class _Replay(Exception):
    """Rolls back an admission that found a stored answer."""

    def __init__(self, response: str):
        self.response = response


class Ledger:
    """Reservations and ledger rows in the gateway database.

    Args:
        db: the open gateway database.
        replica: this process's name in ``reservations.replica`` (:func:`replica_id`).
        ttl: seconds a hold outlives its replica's last renewal.
        clock: Unix seconds (the database is shared between hosts, so wall-clock time).
    """

    def __init__(self, db: Database, replica: str | None = None, ttl: float = 30.0,
                 clock: Callable[[], float] = time.time):
        self.db = db
        self.replica = replica or replica_id()
        self.ttl = ttl
        self._clock = clock
        self._stop = threading.Event()
        self._keeper: threading.Thread | None = None

    def reserve(self, key: KeyRecord | None, amount_micros: int, idempotency_key: str | None = None) -> Reservation:
        """Admit a request and hold ``amount_micros`` of its key's credit (one transaction).

        Returns:
            The hold; its ``replay`` is set instead when ``idempotency_key`` names a request
            of this key that completed (nothing is held or charged then).

        Raises:
            InsufficientQuota: the key's balance minus its live reservations is not above
                zero; the message gives the available credit, never the key.
            RequestConflict: a request of this key with the same idempotency key is running.
        """
        hold = Reservation("req_" + secrets.token_hex(12), key.id if key else None, amount_micros,
                           idempotency_key if key else None)
        if key is None:
            return hold
        try:
            if self.db.dialect == "postgresql" and hold.idempotency_key is None:
                self._hold_in_one_statement(hold)
            else:
                self._hold(hold)
        except _Replay as replay:
            hold.replay, hold.amount_micros = replay.response, 0
        except IntegrityError:
            raise RequestConflict(
                f"A request of key {key.id} with idempotency key '{hold.idempotency_key}' is still running; "
                "retry once it has finished to get its answer.",
                param="Idempotency-Key",
            ) from None
        return hold

    def _hold(self, hold: Reservation) -> None:
        """Admission as a transaction: insert the hold, look for a stored answer, take the credit."""
        now = self._clock()
        with self.db.transaction(durable=False) as conn:  # a crash forgets a hold anyway
            conn.execute(insert(reservations).values(
                id=hold.id, key_id=hold.key_id, amount_micros=hold.amount_micros, replica=self.replica,
                idempotency_key=hold.idempotency_key, created_at=now, expires_at=now + self.ttl,
            ))
            if hold.idempotency_key is not None:
                stored = conn.execute(
                    select(ledger.c.response).where(
                        ledger.c.key_id == hold.key_id, ledger.c.idempotency_key == hold.idempotency_key,
                        ledger.c.status == "completed", ledger.c.response.is_not(None),
                    ).limit(1)
                ).scalar()
                if stored is not None:
                    raise _Replay(stored)
            held = conn.execute(_take_credit(hold)).first()
            if held is None:
                _refuse(conn, hold.key_id)

    def _hold_in_one_statement(self, hold: Reservation) -> None:
        """Admission on PostgreSQL as one statement in autocommit (one round trip):
        ``WITH held AS (UPDATE keys ... RETURNING id) INSERT INTO reservations SELECT ... FROM held``."""
        now = self._clock()
        held = _take_credit(hold).cte("held")
        values = select(literal(hold.id), held.c.id, literal(hold.amount_micros, BigInteger), literal(self.replica),
                        literal(now, Double), literal(now + self.ttl, Double))
        statement = insert(reservations).from_select(
            ["id", "key_id", "amount_micros", "replica", "created_at", "expires_at"], values
        ).add_cte(held).returning(reservations.c.id)
        with self.db.read() as conn:
            if conn.execute(statement).first() is None:
                _refuse(conn, hold.key_id)

    def settle(self, hold: Reservation, usage: Usage, response: str | None = None) -> None:
        """Release the hold, write the request's row and charge its key, in one transaction.

        Args:
            hold: the reservation (one with a ``replay`` is not settled).
            usage: what the request used.
            response: the answer as JSON text, kept for idempotent replays (completed
                requests with an idempotency key only).

        Settling a reservation a second time does nothing. A transaction the database
        aborts (a lost connection, a deadlock) is tried again, up to 5 times over about 1.5 s.

        Raises:
            sqlalchemy.exc.OperationalError: the database refused all the tries.
        """
        if hold.settled or hold.replay is not None:
            return
        latency_ms = round((time.monotonic() - hold.started) * 1000)
        for attempt in range(_SETTLE_TRIES):
            try:
                self._settle(hold, usage, response, latency_ms)
                break
            except IntegrityError:
                if attempt == 0:
                    raise
                break  # an earlier try committed before its connection was lost
            except OperationalError as exc:
                if attempt == _SETTLE_TRIES - 1:
                    raise
                logger.warning("settling %s failed (%s); trying again", hold.id, type(exc.orig).__name__)
                time.sleep(0.1 * 2**attempt)
        hold.settled = True

    def _settle(self, hold: Reservation, usage: Usage, response: str | None, latency_ms: int) -> None:
        row = insert(ledger).values(
            id=hold.id, key_id=hold.key_id, completion_id=usage.completion_id, model=usage.model,
            prompt_tokens=usage.prompt_tokens, completion_tokens=usage.completion_tokens,
            cost_micros=usage.cost_micros, latency_ms=latency_ms, status=usage.status,
            error_code=usage.error_code, created_at=self._clock(), replica=self.replica,
            idempotency_key=hold.idempotency_key,
            response=response if usage.status == "completed" and hold.idempotency_key else None,
        )
        release = delete(reservations).where(reservations.c.id == hold.id).returning(reservations.c.amount_micros)
        if self.db.dialect == "postgresql":  # one statement in autocommit: one round trip
            if hold.key_id is not None:
                released = release.cte("released")
                charged = _charge(hold.key_id, usage.cost_micros,
                                  func.coalesce(select(released.c.amount_micros).scalar_subquery(), 0))
                row = row.add_cte(released).add_cte(charged.returning(keys.c.id).cte("charged"))
            with self.db.read() as conn:
                conn.execute(row)
            return
        with self.db.transaction() as conn:
            if hold.key_id is not None:
                released = conn.execute(release).scalar()  # None: the hold lapsed and a keeper released it
                conn.execute(_charge(hold.key_id, usage.cost_micros, released or 0))
            conn.execute(row)

    def renew(self) -> int:
        """Push this replica's holds ``ttl`` seconds ahead; returns how many it holds."""
        with self.db.transaction(durable=False) as conn:
            return conn.execute(
                update(reservations).where(reservations.c.replica == self.replica)
                .values(expires_at=self._clock() + self.ttl)
            ).rowcount

    def release_expired(self) -> int:
        """Release every hold whose replica stopped renewing it; returns how many."""
        with self.db.transaction() as conn:
            lapsed = conn.execute(
                delete(reservations).where(reservations.c.expires_at < self._clock())
                .returning(reservations.c.key_id, reservations.c.amount_micros)
            ).all()
            totals: dict[str, int] = defaultdict(int)
            for key_id, amount in lapsed:
                totals[key_id] += amount
            for key_id in sorted(totals):  # one lock order for every replica
                conn.execute(update(keys).where(keys.c.id == key_id)
                             .values(reserved_micros=keys.c.reserved_micros - totals[key_id]))
        if lapsed:
            logger.warning("released %d lapsed reservations of stopped replicas", len(lapsed))
        return len(lapsed)

    def start_keeper(self) -> None:
        """Start the thread that renews this replica's holds and releases lapsed ones
        every ``ttl / 3`` seconds (a database error is logged and tried again next time)."""
        if self._keeper is not None:
            return
        self._keeper = threading.Thread(target=self._keep, name="chatcap-reservations", daemon=True)
        self._keeper.start()

    def _keep(self) -> None:
        while True:
            try:
                self.renew()
                self.release_expired()
            except Exception:
                logger.exception("renewing reservations failed; trying again")
            if self._stop.wait(self.ttl / 3):
                return

    def close(self) -> None:
        """Stop the keeper thread (call before closing the database)."""
        self._stop.set()
        if self._keeper is not None:
            self._keeper.join()

    def reserved_micros(self, key_id: str) -> int:
        """Credit held by the key's running requests, on every replica."""
        with self.db.read() as conn:
            return conn.execute(select(keys.c.reserved_micros).where(keys.c.id == key_id)).scalar_one()

    def audit(self) -> dict[str, tuple[int, int]]:
        """Check every key's balance and holds against its credits, ledger rows and reservations.

        Returns:
            ``{key_id: (stored balance, credits - ledger costs)}`` for each key where the
            two differ, and ``{"<key_id> reserved": (reserved_micros, sum of its
            reservations)}`` where those differ; empty when the books balance.
        """
        def total(table, column):
            return select(func.coalesce(func.sum(column), 0)).where(table.c.key_id == keys.c.id).scalar_subquery()

        with self.db.read() as conn:
            rows = conn.execute(select(
                keys.c.id, keys.c.balance_micros, keys.c.reserved_micros,
                total(credits, credits.c.amount_micros) - total(ledger, ledger.c.cost_micros),
                total(reservations, reservations.c.amount_micros),
            )).all()
        found: dict[str, tuple[int, int]] = {}
        for key_id, balance, reserved, expected, held in rows:
            if balance != expected:
                found[key_id] = (balance, int(expected))
            if reserved != held:
                found[f"{key_id} reserved"] = (reserved, int(held))
        return found


def _take_credit(hold: Reservation):
    """``UPDATE keys`` adding the hold to ``reserved_micros`` while the key has credit available
    (whatever its credit for a hold of 0: a request that costs nothing cannot overspend)."""
    room = [keys.c.balance_micros - keys.c.reserved_micros > 0] if hold.amount_micros > 0 else []
    return (update(keys)
            .where(keys.c.id == hold.key_id, *room)
            .values(reserved_micros=keys.c.reserved_micros + hold.amount_micros)
            .returning(keys.c.id))


def _charge(key_id: str, cost_micros: int, released):
    """``UPDATE keys`` subtracting a settled request's cost and its released hold."""
    return update(keys).where(keys.c.id == key_id).values(
        balance_micros=keys.c.balance_micros - cost_micros, reserved_micros=keys.c.reserved_micros - released,
    )


def _refuse(conn, key_id: str) -> None:
    """Raise the 402 for a key whose available credit is not above zero.

    Raises:
        InsufficientQuota: always; the message gives the available credit, never the key.
    """
    available = conn.execute(
        select(keys.c.balance_micros - keys.c.reserved_micros).where(keys.c.id == key_id)
    ).scalar_one()
    raise InsufficientQuota(
        f"You exceeded your current quota: key {key_id} has ${micros_to_usd(available)} "
        "of credit available. Top it up with `chatcap keys top-up`."
    )
