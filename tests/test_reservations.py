"""Reservations are kept per request, also when they hold nothing (issue 20, F2).

At a price of 0 every reservation is 0 micro-dollars; they used to share one per-key total, so
the first request to settle removed it and the next one's settle raised ``KeyError`` after its
row was committed (a 500, a leaked in-flight gauge, tokens never counted against TPM).
"""

from __future__ import annotations

import pytest

from mcp_server.errors import InsufficientQuota
from mcp_server.gateway.db import Database
from mcp_server.gateway.keys import KeyStore
from mcp_server.gateway.ledger import Ledger
from mcp_server.gateway.records import Usage
from tests.services import empty_store


def test_concurrent_reservations_settle_each_their_own_at_any_price(tmp_path):
    store = KeyStore(Database.open(tmp_path))
    record, _ = store.create("k", credit_usd=1)
    ledger = Ledger(store.db)
    free = [ledger.reserve(record, 0) for _ in range(8)]
    for hold in free:
        ledger.settle(hold, Usage("m", 3, 4, 0, "completed"))
    assert ledger.reserved_micros(record.id) == 0
    paid = [ledger.reserve(record, amount) for amount in (300, 500)]
    assert ledger.reserved_micros(record.id) == 800
    ledger.settle(paid[0], Usage("m", 3, 4, 70, "completed"))
    assert ledger.reserved_micros(record.id) == 500  # only its own hold is released
    ledger.settle(paid[0], Usage("m", 3, 4, 70, "completed"))  # a second settle does nothing
    ledger.settle(paid[1], Usage("m", 3, 4, 90, "completed"))
    assert ledger.reserved_micros(record.id) == 0
    assert len(store.db.query("SELECT id FROM ledger")) == 10
    assert ledger.audit() == {}
    store.db.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_location(request, tmp_path_factory):
    return empty_store(request, tmp_path_factory)[0]


def test_a_key_without_credit_is_admitted_only_where_the_request_costs_nothing(store_location):
    """The README's keys (``chatcap keys create``, credit 0 by default) serve the free bundled model."""
    store = KeyStore(Database.open(**store_location))
    try:
        record, _ = store.create("no-credit")
        ledger = Ledger(store.db)
        free = ledger.reserve(record, 0)
        with pytest.raises(InsufficientQuota):
            ledger.reserve(record, 1)
        ledger.settle(free, Usage("m", 3, 4, 0, "completed"))
        assert ledger.reserved_micros(record.id) == 0 and store.get(record.id).balance_micros == 0
        assert ledger.audit() == {}
    finally:
        store.db.close()
