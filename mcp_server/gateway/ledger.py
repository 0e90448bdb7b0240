"""The usage ledger: reserve a request's maximum cost up front, settle its real cost at the end.

Usage::

    ledger = Ledger(db)
    hold = ledger.reserve(key, max_cost_micros)        # InsufficientQuota when no credit left
    ...generate...
    ledger.settle(hold, Usage(model, 12, 8, cost, "completed"))   # latency: measured from reserve()

The billing rule:

1. **Admission.** A request is admitted when its key's *available* credit, the stored
   balance minus the reservations of its requests still running, is above zero;
   otherwise it is refused with 402 ``insufficient_quota`` before any generation. An
   admitted request reserves its maximum cost: the price of a whole context of prompt
   plus ``n * max_tokens`` completion tokens (the context when ``max_tokens`` is unset).
2. **Settlement.** When the request ends (completed, failed, or cancelled by its client)
   one transaction inserts its ledger row and subtracts its real cost from the balance;
   then the reservation is released. A request cut short pays for the tokens it got.
3. **Consequences.** Check and reservation happen under one lock, so concurrent requests
   see each other's reservations: the last request admitted saw available credit > 0
   and costs at most its reservation, so a balance never goes below minus one request's
   maximum cost. Reservations are kept per request (its id), also when they hold
   nothing (a price of 0): each settles once (a second call does nothing), releases only
   its own hold, and the row's primary key is the reservation id, so no request is
   charged twice.
4. **Crashes.** Reservations live in memory: a killed process forgets them, and requests
   it had not settled leave neither a row nor a charge. Every committed row survives
   (see :mod:`mcp_server.gateway.db`). One server process per data directory.

Requests without a key (open mode, or the single ``--api-key``) are recorded with
``key_id`` NULL and charge nobody.
"""

from __future__ import annotations

import math
import secrets
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Literal

from mcp_server.catalog import Price
from mcp_server.errors import InsufficientQuota
from mcp_server.gateway.db import Database
from mcp_server.gateway.keys import KeyRecord, micros_to_usd

__all__ = ["Ledger", "Reservation", "Status", "Usage", "UsageTotal", "cost_micros", "usage_totals"]

Status = Literal["completed", "cancelled", "failed"]


def cost_micros(price: Price, prompt_tokens: int, completion_tokens: int) -> int:
    """The cost of a request in whole micro-dollars, rounded up.

    A price in USD per million tokens is a price in micro-dollars per token, so the
    exact cost is ``prompt * input + completion * output`` micro-dollars; decimals keep
    prices such as 0.1 exact before the one rounding.
    """
    exact = Decimal(str(price.input)) * prompt_tokens + Decimal(str(price.output)) * completion_tokens
    return math.ceil(exact)


@dataclass
class Reservation:
    """An admitted request's hold on its key's credit.

    Attributes:
        id: ``req_<hex>``; becomes the ledger row's primary key.
        key_id: the key charged, or None when the request has no key.
        amount_micros: the reserved maximum cost.
        started: ``time.monotonic()`` at admission, for the latency.
        settled: set once the row is written.
    """

    id: str
    key_id: str | None
    amount_micros: int
    started: float = field(default_factory=time.monotonic)
    settled: bool = False


@dataclass(frozen=True)
class Usage:
    """What a finished request used.

    Attributes:
        model: the model id.
        prompt_tokens: tokens in the prompt (0 when generation never started).
        completion_tokens: tokens generated, across all choices.
        cost_micros: what the request costs (:func:`cost_micros`).
        status: ``completed``, ``cancelled`` (the client went away) or ``failed``.
        completion_id: the ``chatcmpl-...`` id the client saw, or None.
        error_code: the error's code when ``status`` is ``failed``.
    """

    model: str
    prompt_tokens: int
    completion_tokens: int
    cost_micros: int
    status: Status
    completion_id: str | None = None
    error_code: str | None = None


@dataclass(frozen=True)
class UsageTotal:
    """What one key spent on one model: the sum of its ledger rows.

    Attributes:
        key_id: the key, or None for requests without one (open mode, the single ``--api-key``).
        model: the model id.
        requests: ledger rows (admitted requests); ``completed + cancelled + failed``.
        completed: rows with status ``completed``.
        cancelled: rows with status ``cancelled``.
        failed: rows with status ``failed``.
        prompt_tokens: the rows' prompt tokens.
        completion_tokens: the rows' completion tokens.
        cost_micros: the rows' costs, micro-dollars (what the key was charged).
    """

    key_id: str | None
    model: str
    requests: int = 0
    completed: int = 0
    cancelled: int = 0
    failed: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_micros: int = 0


def usage_totals(rows: Iterable[Mapping]) -> list[UsageTotal]:
    """Sum ledger rows per key and model (``chatcap keys usage``).

    Args:
        rows: ledger rows, each a mapping with at least ``key_id``, ``model``, ``status``,
            ``prompt_tokens``, ``completion_tokens`` and ``cost_micros``.

    Returns:
        One total per (key, model) that has rows, sorted by key id (requests without a key
        last) then model.
    """
    totals: dict[tuple[str | None, str], dict[str, int]] = {}
    for row in rows:
        total = totals.setdefault((row["key_id"], row["model"]), dict.fromkeys(
            ("requests", "completed", "cancelled", "failed", "prompt_tokens", "completion_tokens", "cost_micros"), 0))
        total["requests"] += 1
        total[row["status"]] += 1
        for name in ("prompt_tokens", "completion_tokens", "cost_micros"):
            total[name] += row[name]
    ordered = sorted(totals, key=lambda pair: (pair[0] is None, pair[0] or "", pair[1]))
    return [UsageTotal(key_id, model, **totals[key_id, model]) for key_id, model in ordered]


class Ledger:
    """Reservations in memory and ledger rows in the database.

    Args:
        db: the open gateway database.
    """

    def __init__(self, db: Database):
        self.db = db
        self._lock = threading.Lock()
        self._reserved: dict[str, dict[str, int]] = {}  # key id -> reservation id -> amount

    def reserve(self, key: KeyRecord | None, amount_micros: int) -> Reservation:
        """Admit a request and hold ``amount_micros`` of its key's credit.

        Raises:
            InsufficientQuota: the key's balance minus its running reservations is not
                above zero; the message gives the balance, never the key.
        """
        hold = Reservation("req_" + secrets.token_hex(12), key.id if key else None, amount_micros)
        if key is None:
            return hold
        with self._lock:
            rows = self.db.query("SELECT balance_micros FROM keys WHERE id = ?", (key.id,))
            holds = self._reserved.setdefault(key.id, {})
            available = rows[0]["balance_micros"] - sum(holds.values())
            if available <= 0:
                raise InsufficientQuota(
                    f"You exceeded your current quota: key {key.id} has ${micros_to_usd(available)} "
                    "of credit available. Top it up with `chatcap keys top-up`."
                )
            holds[hold.id] = amount_micros
        return hold

    def settle(self, hold: Reservation, usage: Usage) -> None:
        """Write the request's row and charge its key in one transaction; release the hold.

        Settling a reservation a second time does nothing.
        """
        with self._lock:
            if hold.settled:
                return
            latency_ms = round((time.monotonic() - hold.started) * 1000)
            with self.db.transaction() as conn:
                conn.execute(
                    "INSERT INTO ledger (id, key_id, completion_id, model, prompt_tokens, completion_tokens, "
                    "cost_micros, latency_ms, status, error_code, created_at) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                    (hold.id, hold.key_id, usage.completion_id, usage.model, usage.prompt_tokens,
                     usage.completion_tokens, usage.cost_micros, latency_ms, usage.status, usage.error_code,
                     time.time()),
                )
                if hold.key_id is not None:
                    conn.execute(
                        "UPDATE keys SET balance_micros = balance_micros - ? WHERE id = ?",
                        (usage.cost_micros, hold.key_id),
                    )
            hold.settled = True
            holds = self._reserved.get(hold.key_id, {})
            holds.pop(hold.id, None)
            if not holds:
                self._reserved.pop(hold.key_id, None)

    def reserved_micros(self, key_id: str) -> int:
        """Credit held by the key's running requests."""
        with self._lock:
            return sum(self._reserved.get(key_id, {}).values())

    def usage(self, key_id: str | None = None, since: float | None = None) -> list[UsageTotal]:
        """Requests, tokens and spend per key and model (:func:`usage_totals` of the rows).

        Args:
            key_id: only this key's rows; None: every row.
            since: only rows created at or after this Unix time; None: all.
        """
        where, params = [], []
        if key_id is not None:
            where.append("key_id = ?")
            params.append(key_id)
        if since is not None:
            where.append("created_at >= ?")
            params.append(since)
        rows = self.db.query(
            "SELECT key_id, model, status, prompt_tokens, completion_tokens, cost_micros FROM ledger"
            + (" WHERE " + " AND ".join(where) if where else ""),
            tuple(params),
        )
        return usage_totals(rows)

    def audit(self) -> dict[str, tuple[int, int]]:
        """Check every key's balance against its credits and ledger rows.

        Returns:
            ``{key_id: (stored balance, credits - ledger costs)}`` for each key where the
            two differ; empty when the books balance.
        """
        rows = self.db.query(
            "SELECT k.id, k.balance_micros AS balance, "
            "(SELECT COALESCE(SUM(amount_micros), 0) FROM credits c WHERE c.key_id = k.id) - "
            "(SELECT COALESCE(SUM(cost_micros), 0) FROM ledger l WHERE l.key_id = k.id) AS expected "
            "FROM keys k"
        )
        return {r["id"]: (r["balance"], r["expected"]) for r in rows if r["balance"] != r["expected"]}
