"""The gateway: the one place a chat completion is authenticated, admitted, metered and billed.

REST and MCP run completions through :class:`Gateway` (``stream``/``complete`` with the
caller's ``key``) and read models from its ``service``. Around every generation it:

1. checks the request's size limits and image inputs (400, :mod:`.request_limits`);
2. applies the key's RPM/TPM limits (429, :mod:`.limits`);
3. reserves the request's maximum cost (402 when no credit is left, :mod:`.ledger`), or
   finds the stored answer of an earlier request with the same idempotency key
   (:mod:`.idempotency`: 409 while that one runs);
4. runs the service, timing the first chunk and counting tokens as they come;
5. when the generation ends in any way (completed, failed, or closed by a client that
   went away), writes its ledger row and charges its key in one transaction, shielded
   from cancellation, before the caller sees the end of the stream; the metrics settle
   with it, even when writing the row fails.

Shutdown (:meth:`Gateway.begin_shutdown`, called when the server is told to stop): a
generation still running when the grace ends is stopped and raises
:class:`~mcp_server.errors.EngineUnavailable` (code ``server_shutting_down``), which the
surfaces send in the OpenAI error shape (JSON, or an SSE error event and ``[DONE]``). It is
billed only for what the client received: the tokens of the chunks a stream delivered, nothing
for a non-streamed answer that never went out.

Without a data directory or ``--database-url`` there is no key store or ledger: the
gateway only checks limits, the single ``--api-key``, and keeps metrics.
"""

from __future__ import annotations

import asyncio
import functools
import hmac
import json
import logging
import math
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import anyio

from mcp_server.catalog import ModelCard, Price, catalog_price
from mcp_server.errors import AuthenticationError, EngineUnavailable, ServiceError
from mcp_server.gateway.idempotency import replay_chunks, stored_answer
from mcp_server.gateway.limits import RateLimiter
from mcp_server.gateway.meter import Meter
from mcp_server.gateway.metrics import Metrics
from mcp_server.gateway.records import KeyRecord, Reservation, Status, Usage, cost_micros
from mcp_server.gateway.request_limits import RequestLimits
from mcp_server.protocol.chunks import drain, usage
from mcp_server.protocol.request import ChatRequest
from mcp_server.service import ChatService, ProgressCallback
from mcp_server.settings import Settings

if TYPE_CHECKING:  # loaded only with a database or Redis (SQLAlchemy and redis-py cost 18 MB)
    from mcp_server.gateway.keys import KeyStore
    from mcp_server.gateway.ledger import Ledger
    from mcp_server.gateway.redis_limits import RedisRateLimiter

__all__ = ["Gateway"]

logger = logging.getLogger("chatcap.gateway")
_SHUTTING_DOWN = "server_shutting_down"


class Gateway:
    """Keys, limits, billing and metrics in front of a :class:`ChatService`.

    Args:
        service: the chat service.
        limits: request size limits.
        api_paths: the paths that reach the inference API (the capability's
            ``api_paths``): they need a key, and the HTTP metrics count them by name.
        store: the key store, or None to run without keys and ledger.
        ledger: the ledger on the store's database (default: one with a fresh replica id).
        api_key: the single ``--api-key`` (unmetered), or None.
        price: a price for every served model, overriding the catalog's; None reads
            the catalog (models it does not know are free).
        rate_limiter: per-key RPM/TPM limits (:class:`RateLimiter` or :class:`RedisRateLimiter`).
        allow_unauthenticated: let every caller in once all keys of the store are revoked
            (without it, a store that has held keys stays closed).
    """

    def __init__(
        self,
        service: ChatService,
        limits: RequestLimits,
        api_paths: frozenset[str],
        *,
        store: KeyStore | None = None,
        ledger: Ledger | None = None,
        api_key: str | None = None,
        price: Price | None = None,
        rate_limiter: RateLimiter | RedisRateLimiter | None = None,
        allow_unauthenticated: bool = False,
    ):
        self.service = service
        self.limits = limits
        self.api_paths = api_paths
        self.store = store
        if ledger is None and store is not None:
            from mcp_server.gateway.ledger import Ledger

            ledger = Ledger(store.db)
        self.ledger = ledger
        self.api_key = api_key
        self.price = price
        self.rate_limiter = rate_limiter or RateLimiter()
        self.allow_unauthenticated = allow_unauthenticated
        self.in_flight = 0
        self.metrics = Metrics(self._running, api_paths)
        self._shutdown_deadline = math.inf  # the event loop's time at which generations are cut
        self._waiting: set[asyncio.Timeout] = set()  # the waits for a chunk under way

    @classmethod
    def build(cls, service: ChatService, settings: Settings, api_paths: frozenset[str]) -> Gateway:
        """The gateway ``settings`` describe: opens the database when ``database_url`` or
        ``data_dir`` is set (and starts the ledger's keeper thread), and shares the rate
        limits through Redis when ``redis_url`` is set.

        Raises:
            ValueError: a bad ``--database-url`` or ``--redis-url``.
            sqlalchemy.exc.DBAPIError: the database cannot be reached.
        """
        store = ledger = rate_limiter = None
        if settings.database_url or settings.data_dir is not None:
            from mcp_server.gateway.db import Database
            from mcp_server.gateway.keys import KeyStore
            from mcp_server.gateway.ledger import Ledger

            store = KeyStore(Database.open(settings.data_dir, url=settings.database_url))
            ledger = Ledger(store.db, ttl=settings.reservation_ttl)
            ledger.start_keeper()
        if settings.redis_url:
            from mcp_server.gateway.redis_limits import RedisRateLimiter

            rate_limiter = RedisRateLimiter(settings.redis_url)
        return cls(
            service,
            RequestLimits(max_body_bytes=settings.max_request_bytes, read_timeout=settings.read_timeout),
            api_paths,
            store=store,
            ledger=ledger,
            api_key=settings.api_key,
            price=Price(*settings.price) if settings.price is not None else None,
            rate_limiter=rate_limiter,
            allow_unauthenticated=settings.allow_unauthenticated,
        )

    def needs_key(self, path: str) -> bool:
        """Whether an HTTP request to ``path`` must pass :meth:`authenticate`: it lies under the
        first segment of an API path (``/v1``, ``/mcp``), so unknown API paths are guarded too."""
        return any(path == prefix or path.startswith(prefix + "/") for prefix in self._guarded)

    @functools.cached_property
    def _guarded(self) -> frozenset[str]:
        return frozenset("/" + path.strip("/").split("/")[0] for path in self.api_paths)

    def close(self) -> None:
        """Stop the ledger's keeper, close the rate-limit store and the database (after the
        last request has settled)."""
        if self.ledger is not None:
            self.ledger.close()
        self.rate_limiter.close()
        if self.store is not None:
            self.store.db.close()

    def _running(self) -> dict[str, int]:
        by_model = getattr(self.service.engine, "running_by_model", None)
        if by_model is not None:
            return by_model()
        running = getattr(self.service.engine, "running", None)
        return {self.service.engine.models[0].id: running if isinstance(running, int) else self.in_flight}

    async def authenticate(self, authorization: str | None) -> KeyRecord | None:
        """Resolve an ``Authorization`` header to the caller's key.

        Rules: the single ``--api-key`` is accepted and unmetered (None); a key of the
        store that is not revoked returns its record. Every caller is let in (None) only
        when no ``--api-key`` is set and the store (if any) has never held a key, or holds
        no active key and ``allow_unauthenticated`` is set: revoking the last key does not
        open the server.

        Raises:
            AuthenticationError: a key is required and the header is missing, carries an
                unknown or revoked key, or is not ``Bearer``. The key is never echoed.
        """
        scheme, _, token = (authorization or "").partition(" ")
        token = token.strip() if scheme.lower() == "bearer" else ""
        if token and self.api_key and hmac.compare_digest(token.encode(), self.api_key.encode()):
            return None
        store = self.store
        if token and store is not None:
            key = await _in_thread(store.authenticate, token)
            if key is not None and key.active:
                return key
            if key is not None:
                raise AuthenticationError(f"The API key {key.id} has been revoked.")
        required = self.api_key is not None or (store is not None and await _in_thread(self._closed))
        if not required:
            return None
        if not token:
            raise AuthenticationError("Missing API key: send 'Authorization: Bearer <key>'.", bearer_error=None)
        raise AuthenticationError("Incorrect API key provided.")

    def price_of(self, model_id: str) -> Price:
        """The price of a served model: ``--price``, else the catalog's (free for a model it lacks)."""
        return self.price or catalog_price(model_id)

    def requires_key(self) -> bool:
        """Whether a caller needs a key now (the ``--api-key``, or a store that is closed; see :meth:`authenticate`)."""
        return self.api_key is not None or (self.store is not None and self._closed())

    def _closed(self) -> bool:
        """Whether the store requires a key (see :meth:`authenticate`)."""
        if self.allow_unauthenticated:
            return self.store.has_active_keys()
        return self.store.has_keys()

    def begin_shutdown(self, grace: float) -> None:
        """Cut every generation still running ``grace`` seconds from now (see the module
        docstring). Call it on the event loop, when the server stops accepting requests."""
        self._shutdown_deadline = min(self._shutdown_deadline, asyncio.get_running_loop().time() + grace)
        for timeout in self._waiting:
            when = timeout.when()
            timeout.reschedule(self._shutdown_deadline if when is None else min(when, self._shutdown_deadline))

    async def complete(
        self, request: ChatRequest, progress: ProgressCallback | None = None, *, key: KeyRecord | None = None,
        tenant: str | None = None, idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        """Run a request to the end and return an OpenAI ``chat.completion`` dict: the
        :meth:`stream` (usage included), drained. Raises as :meth:`stream`; an answer cut by
        the shutdown deadline is billed nothing (the client received none of it)."""
        request = replace(request, include_usage=True)
        return await drain(self._run(request, progress, key, tenant, streamed=False, idempotency_key=idempotency_key))

    def stream(
        self, request: ChatRequest, progress: ProgressCallback | None = None, *, key: KeyRecord | None = None,
        tenant: str | None = None, idempotency_key: str | None = None,
    ) -> AsyncIterator[dict[str, Any]]:
        """As :meth:`ChatService.stream`, admitted, metered and billed.

        Args:
            request: the parsed request.
            progress: passed to the service.
            key: the caller's key (from :meth:`authenticate`), or None.
            tenant: who sent it (:func:`.http.request_tenant`), handed to the engine for
                fairness and prefix-cache isolation (``GenerationRequest.tenant``).
            idempotency_key: the request's ``Idempotency-Key`` (:mod:`.idempotency`), or None.

        Returns:
            An async generator of chunk dicts; each chunk it has yielded counts as
            delivered when the shutdown deadline cuts the stream.

        Raises:
            InvalidRequest: a size limit is exceeded, or an image goes to a model without
                image input (both before admission: no ledger row, no RPM).
            ModelNotFound: the model is not served.
            RateLimited: the key's RPM or TPM limit is reached.
            InsufficientQuota: the key has no credit left.
            RequestConflict: a request with the same idempotency key is running.
            EngineUnavailable: (code ``server_shutting_down``) the shutdown deadline cut
                the generation.
            ServiceError: whatever the service raises, after the request is settled.
        """
        return self._run(request, progress, key, tenant, streamed=True, idempotency_key=idempotency_key)

    async def _run(
        self, request: ChatRequest, progress: ProgressCallback | None, key: KeyRecord | None, tenant: str | None,
        streamed: bool, idempotency_key: str | None = None,
    ) -> AsyncIterator[dict[str, Any]]:
        self.limits.check(request)
        request = replace(request, generation=replace(request.generation, tenant=tenant))
        card = self.service.prepare(request)  # the client's faults are refused before admission
        price = self.price_of(card.id)
        await self.rate_limiter.admit(key)
        hold = await self._reserve(key, _max_cost(request, card, price), idempotency_key)
        if hold is not None and hold.replay is not None:
            for chunk in replay_chunks(json.loads(hold.replay), request.include_usage):
                yield chunk
            return
        meter = Meter(card.id, time.monotonic())
        if hold is not None and hold.idempotency_key is not None:
            meter.chunks = []
        delivered = (0, 0, 0)
        self.in_flight += 1
        self.metrics.in_flight.labels(card.id).inc()
        self.metrics.queue_depth.labels(card.id).inc()
        status: Status = "cancelled"
        error_code: str | None = None
        chunks = self.service.stream(request, card, progress, on_usage=meter.update)
        try:
            while (chunk := await self._next_chunk(chunks)) is not None:
                if meter.completion_id is None:
                    meter.completion_id, meter.first_chunk = chunk["id"], time.monotonic()
                    self.metrics.queue_depth.labels(card.id).dec()
                    self.metrics.time_to_first_token.labels(card.id).observe(meter.first_chunk - meter.started)
                if meter.chunks is not None:
                    meter.chunks.append(chunk)
                yield chunk
                if streamed:
                    delivered = (meter.prompt_tokens, meter.completion_tokens, meter.cached_tokens)
            status = "completed"
        except ServiceError as exc:
            status, error_code = "failed", exc.code or exc.error_type
            if exc.code == _SHUTTING_DOWN:
                meter.update(*delivered)
            raise
        except Exception:
            status, error_code = "failed", "server_error"
            raise
        finally:
            with anyio.CancelScope(shield=True):
                await chunks.aclose()
                await self._settle(key, hold, meter, price, status, error_code)

    async def _next_chunk(self, chunks: AsyncIterator[dict[str, Any]]) -> dict[str, Any] | None:
        """The next chunk, None at the end.

        The wait is an ``asyncio.timeout_at`` that :meth:`begin_shutdown` reschedules (one small
        object per chunk: an anyio ``CancelScope`` cost about 2 µs of a chunk's ~20).

        Raises:
            EngineUnavailable: the shutdown deadline passed while waiting for it.
        """
        deadline = self._shutdown_deadline
        timeout = asyncio.timeout_at(None if math.isinf(deadline) else deadline)
        self._waiting.add(timeout)
        try:
            async with timeout:
                return await anext(chunks)
        except StopAsyncIteration:
            return None
        except TimeoutError:
            if not timeout.expired():
                raise
        finally:
            self._waiting.discard(timeout)
        raise EngineUnavailable(
            "The server is shutting down and stopped this generation at its shutdown deadline; retry the request.",
            code=_SHUTTING_DOWN,
        )

    async def _reserve(self, key: KeyRecord | None, amount: int, idempotency_key: str | None) -> Reservation | None:
        if self.ledger is None:
            return None
        return await _in_thread(self.ledger.reserve, key, amount, idempotency_key)

    async def _settle(
        self, key: KeyRecord | None, hold: Reservation | None, meter: Meter, price: Price,
        status: Status, error_code: str | None,
    ) -> None:
        """Write the ledger row and charge the key, then count tokens, limits and metrics, and
        log the request's line: its id (the ledger row's), key id (never the secret), model,
        status, tokens, time to first chunk and total time."""
        cost = cost_micros(price, meter.prompt_tokens, meter.completion_tokens)
        meter.log(hold.id if hold is not None else None, key.id if key else None, status, error_code)
        try:
            if self.ledger is not None and hold is not None:
                used = Usage(meter.model, meter.prompt_tokens, meter.completion_tokens, cost, status,
                             meter.completion_id, error_code)
                response = (await stored_answer(meter.chunks, usage(meter.prompt_tokens, meter.completion_tokens,
                                                                    meter.cached_tokens))
                            if status == "completed" and meter.chunks else None)
                await anyio.to_thread.run_sync(self.ledger.settle, hold, used, response)
        finally:
            try:
                await self.rate_limiter.record_tokens(key, meter.prompt_tokens + meter.completion_tokens)
            except ServiceError as exc:  # the answer is delivered and billed; the window misses it
                logger.warning("TPM not recorded for key %s: %s", key.id if key else None, exc.message)
            self.in_flight -= 1
            self.metrics.settled(meter, status)


async def _in_thread(function, *args):
    """Run a database call in a worker thread; a database that does not answer is 503.

    Raises:
        EngineUnavailable: the database connection failed (code ``database_unavailable``).
    """
    from sqlalchemy.exc import InterfaceError, OperationalError  # loaded with the database

    try:
        return await anyio.to_thread.run_sync(function, *args)
    except (OperationalError, InterfaceError) as exc:
        logger.error("the gateway database did not answer: %s", exc.orig)
        raise EngineUnavailable(
            "The gateway database did not answer; try again shortly.", code="database_unavailable"
        ) from None


def _max_cost(request: ChatRequest, card: ModelCard, price: Price) -> int:
    """The most a request can cost: a whole context of prompt, ``n`` full completions."""
    context = card.context_length
    per_choice = min(request.generation.max_tokens or context, context)
    return cost_micros(price, context, request.n * per_choice)
