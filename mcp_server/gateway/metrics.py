"""Prometheus metrics, one registry per app (no process-global state).

Served at ``GET /metrics`` in the Prometheus text format (``prometheus_client``):

==========================================  =========  ==========================================
name                                        type       meaning
==========================================  =========  ==========================================
``chatcap_http_requests_total``             counter    HTTP requests by ``path`` and ``status``
``chatcap_generations_total``               counter    admitted generations by ``model`` and
                                                       ``outcome`` (completed, cancelled, failed)
``chatcap_prompt_tokens_total``             counter    prompt tokens, by ``model``
``chatcap_cached_prompt_tokens_total``      counter    of those, served from a prefix cache
``chatcap_completion_tokens_total``         counter    completion tokens, by ``model``
``chatcap_time_to_first_token_seconds``     histogram  admission to first chunk, by ``model``
``chatcap_request_latency_seconds``         histogram  admission to end, by ``model``
``chatcap_queue_depth``                     gauge      admitted generations without a first
                                                       chunk, by ``model``
``chatcap_in_flight_requests``              gauge      admitted generations not yet settled,
                                                       by ``model``
``chatcap_running_requests``                gauge      each model's engine's running count
                                                       (waiting for a batch slot or decoding);
                                                       the in-flight count for engines that
                                                       keep none
==========================================  =========  ==========================================

``path`` is one of the served API paths or ``other``, so random URLs cannot grow the series;
``model`` is a served model id (the service refuses others before they are counted).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from mcp_server.gateway.meter import Meter

__all__ = ["CONTENT_TYPE", "Metrics"]

CONTENT_TYPE = CONTENT_TYPE_LATEST
_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class Metrics:
    """The service's instruments in their own registry.

    Args:
        running: returns each served model's running count (see the module table).
        paths: the path labels kept as they are; any other path counts as ``other``.
    """

    def __init__(self, running: Callable[[], dict[str, int]], paths: frozenset[str]):
        self.registry = CollectorRegistry()
        self._paths = paths
        self.http_requests = Counter(
            "chatcap_http_requests", "HTTP requests by path and status.", ["path", "status"], registry=self.registry
        )
        self.generations = Counter(
            "chatcap_generations", "Admitted generations by model and outcome.", ["model", "outcome"],
            registry=self.registry,
        )
        self.prompt_tokens = Counter(
            "chatcap_prompt_tokens", "Prompt tokens processed.", ["model"], registry=self.registry
        )
        self.cached_prompt_tokens = Counter(
            "chatcap_cached_prompt_tokens", "Prompt tokens served from a prefix cache (part of the prompt tokens).",
            ["model"], registry=self.registry,
        )
        self.completion_tokens = Counter(
            "chatcap_completion_tokens", "Completion tokens generated.", ["model"], registry=self.registry
        )
        self.time_to_first_token = Histogram(
            "chatcap_time_to_first_token_seconds", "Seconds from admission to the first chunk.", ["model"],
            buckets=_LATENCY_BUCKETS, registry=self.registry,
        )
        self.latency = Histogram(
            "chatcap_request_latency_seconds", "Seconds from admission to the end of a generation.", ["model"],
            buckets=_LATENCY_BUCKETS, registry=self.registry,
        )
        self.queue_depth = Gauge(
            "chatcap_queue_depth", "Admitted generations waiting for their first chunk.", ["model"],
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "chatcap_in_flight_requests", "Admitted generations not yet settled.", ["model"], registry=self.registry
        )
        self.registry.register(_RunningCollector(running))

    def count_http(self, path: str, status: int) -> None:
        """Count one HTTP response."""
        self.http_requests.labels(path if path in self._paths else "other", str(status)).inc()

    def settled(self, meter: Meter, status: str) -> None:
        """Count one admitted generation that ended with ``status`` (its tokens, latency, and
        its place in the queue and in-flight gauges, which it leaves)."""
        model = meter.model
        if meter.completion_id is None:
            self.queue_depth.labels(model).dec()
        self.in_flight.labels(model).dec()
        self.generations.labels(model, status).inc()
        self.prompt_tokens.labels(model).inc(meter.prompt_tokens)
        self.cached_prompt_tokens.labels(model).inc(meter.cached_tokens)
        self.completion_tokens.labels(model).inc(meter.completion_tokens)
        self.latency.labels(model).observe(time.monotonic() - meter.started)

    def render(self) -> bytes:
        """The registry in the Prometheus text exposition format."""
        return generate_latest(self.registry)


class _RunningCollector(Collector):
    """``chatcap_running_requests{model}``, read from the engines at each scrape (models an
    attached SGLang server serves are known only once it answers)."""

    def __init__(self, running: Callable[[], dict[str, int]]):
        self._running = running

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "chatcap_running_requests", "Sequences the engine is running or queueing.", labels=["model"]
        )
        for model, count in self._running().items():
            family.add_metric([model], count)
        yield family
