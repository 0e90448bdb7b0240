"""Usage you can read: the ledger's rows summed per key and model (``chatcap keys usage``)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from sqlalchemy import select

from mcp_server.gateway.db import Database
from mcp_server.gateway.schema import ledger

__all__ = ["UsageTotal", "query_usage", "usage_totals"]


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


def query_usage(db: Database, key_id: str | None = None, since: float | None = None) -> list[UsageTotal]:
    """Requests, tokens and spend per key and model (:func:`usage_totals` of the ledger's rows).

    Args:
        db: the gateway database.
        key_id: only this key's rows; None: every row.
        since: only rows created at or after this Unix time; None: all.
    """
    query = select(ledger.c.key_id, ledger.c.model, ledger.c.status, ledger.c.prompt_tokens,
                   ledger.c.completion_tokens, ledger.c.cost_micros)
    if key_id is not None:
        query = query.where(ledger.c.key_id == key_id)
    if since is not None:
        query = query.where(ledger.c.created_at >= since)
    with db.read() as conn:
        rows = conn.execute(query).mappings().all()
    return usage_totals(rows)
