"""The gateway's plain records and money, with no database: what the request path needs
when no data directory or ``--database-url`` is set (SQLAlchemy stays unloaded then).

- :class:`KeyRecord`: one API key as stored (:mod:`.keys`).
- :class:`Reservation`, :class:`Usage`, :data:`Status`: a request's hold and what it used
  (:mod:`.ledger`, whose docstring gives the billing rule).
- Money is integer micro-dollars: :func:`usd_to_micros`, :func:`micros_to_usd`,
  :func:`cost_micros`.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Literal

from mcp_server.catalog import Price
from mcp_server.errors import InvalidRequest

__all__ = ["MAX_MICROS", "KeyRecord", "Reservation", "Status", "Usage", "cost_micros", "micros_to_usd", "usd_to_micros"]

Status = Literal["completed", "cancelled", "failed"]

MAX_MICROS = 2**63 - 1
"""The largest balance a BIGINT holds (past it SQLite would switch to REAL, PostgreSQL refuse)."""
_MAX_USD = Decimal(MAX_MICROS) / 1_000_000


def usd_to_micros(usd: float | str | Decimal) -> int:
    """Convert USD to integer micro-dollars, rounding half to even.

    Raises:
        InvalidRequest: the amount is not a finite number, or is above
            :data:`MAX_MICROS` micro-dollars in size.
    """
    try:
        value = Decimal(str(usd))
    except ArithmeticError:
        raise InvalidRequest(f"Not an amount of USD: {usd!r}.") from None
    if not value.is_finite():
        raise InvalidRequest(f"Not an amount of USD: {usd!r}.")
    if abs(value) > _MAX_USD:
        raise InvalidRequest(f"The amount {usd} USD is too large; at most {_MAX_USD} USD.", param="amount")
    return int((value * 1_000_000).quantize(Decimal(1), rounding=ROUND_HALF_EVEN))


def micros_to_usd(micros: int) -> Decimal:
    """Convert integer micro-dollars to an exact USD amount."""
    return Decimal(micros) / 1_000_000


def cost_micros(price: Price, prompt_tokens: int, completion_tokens: int) -> int:
    """The cost of a request in whole micro-dollars, rounded up.

    A price in USD per million tokens is a price in micro-dollars per token, so the
    exact cost is ``prompt * input + completion * output`` micro-dollars; decimals keep
    prices such as 0.1 exact before the one rounding.
    """
    exact = Decimal(str(price.input)) * prompt_tokens + Decimal(str(price.output)) * completion_tokens
    return math.ceil(exact)


@dataclass(frozen=True)
class KeyRecord:
    """One API key as stored (never the secret).

    Attributes:
        id: ``key_<12 hex>``, the name used in logs, the ledger and the CLI.
        name: a label chosen at creation.
        prefix: the secret's first characters (``sk-chatcap-abcd``), for recognising it.
        balance_micros: remaining credit in micro-dollars (may be slightly negative,
            see :mod:`mcp_server.gateway.ledger`).
        rpm: requests per minute allowed, or None for no limit.
        tpm: prompt plus completion tokens per minute allowed, or None.
        created_at: Unix time of creation.
        revoked_at: Unix time of revocation, or None while the key is active.
    """

    id: str
    name: str
    prefix: str
    balance_micros: int
    rpm: int | None
    tpm: int | None
    created_at: float
    revoked_at: float | None

    @property
    def active(self) -> bool:
        """True until the key is revoked."""
        return self.revoked_at is None


@dataclass
class Reservation:
    """An admitted request's hold on its key's credit.

    Attributes:
        id: ``req_<hex>``; becomes the ledger row's primary key.
        key_id: the key charged, or None when the request has no key.
        amount_micros: the reserved maximum cost.
        idempotency_key: the request's idempotency key, or None.
        replay: the stored answer (``chat.completion`` JSON text) of an earlier completed
            request with the same idempotency key; such a reservation holds nothing and
            is not settled.
        started: ``time.monotonic()`` at admission, for the latency.
        settled: set once the row is written.
    """

    id: str
    key_id: str | None
    amount_micros: int
    idempotency_key: str | None = None
    replay: str | None = None
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
