"""The production gateway: API keys, credit, rate limits, usage ledger, request limits, metrics.

Modules, one job each (imports point down the list):

- :mod:`.records`: keys, reservations, usage and money as plain data (no database).
- :mod:`.schema`: the tables (SQLAlchemy Core); :mod:`.migrate`: creating and upgrading them.
- :mod:`.db`: the database: SQLite in the data directory (WAL), or PostgreSQL by URL.
- :mod:`.keys`: API keys, hashed, with balances and limits.
- :mod:`.ledger`: reserve-then-settle billing, reservations shared by replicas, the ledger rows.
- :mod:`.idempotency`: ``Idempotency-Key``: a retried request answered and billed once.
- :mod:`.limits`: per-key RPM/TPM sliding windows (429), in memory;
  :mod:`.redis_limits`: the same windows shared through Redis.
- :mod:`.request_limits`: message count and schema size/depth (400), body size (413), body read timeout (408).
- :mod:`.metrics`: Prometheus instruments.
- :mod:`.gateway`: :class:`Gateway`, through which REST and MCP run every completion.
- :mod:`.http`: the ASGI middleware (body limit and read timeout, authentication, HTTP metrics).
- :mod:`.cli`: ``chatcap keys``.

The database modules (SQLAlchemy) and :mod:`.redis_limits` (redis-py) load only when a data
directory, ``--database-url`` or ``--redis-url`` is set: :class:`KeyStore
<.keys.KeyStore>` and :class:`Ledger <.ledger.Ledger>` are imported from their modules.
"""

from __future__ import annotations

from mcp_server.gateway.gateway import Gateway
from mcp_server.gateway.http import GatewayMiddleware, request_is_keyless, request_key, request_tenant
from mcp_server.gateway.idempotency import idempotency_key, tool_call_idempotency_key
from mcp_server.gateway.records import KeyRecord
from mcp_server.gateway.request_limits import RequestLimits

__all__ = [
    "Gateway", "GatewayMiddleware", "KeyRecord", "RequestLimits", "idempotency_key",
    "tool_call_idempotency_key",
    "request_is_keyless", "request_key", "request_tenant",
]
