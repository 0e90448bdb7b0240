"""Model routing: one :class:`~.base.Engine` in front of one engine per served model.

Each model of a deployment (:mod:`mcp_server.deployment`) gets its own engine, so its own
scheduler (an embedded engine's batch thread, an SGLang server's queue): a model whose
batch is full never holds up another. :class:`ModelRouter` sends each generation to the
engine that serves the request's ``model`` (the service has already resolved it, so an id
that is not served never gets here: it is 404 there, listing :attr:`ModelRouter.models`).

Usage::

    router = ModelRouter([(settings_a, engine_a), (settings_b, engine_b)])
    await router.start()              # starts every engine, together
    router.models                     # every engine's models; the first is the default
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

import anyio

from mcp_server.catalog import ModelCard
from mcp_server.engines import create_engine
from mcp_server.engines.base import Engine, EngineLoad, GenerationDelta, GenerationRequest, ModelInfo
from mcp_server.errors import InvalidRequest, ModelNotFound
from mcp_server.settings import Settings

__all__ = ["ModelRouter", "ServedEngine"]

logger = logging.getLogger(__name__)


@dataclass
class ServedEngine:
    """One engine of a router, with the settings it was built from and its live count.

    Attributes:
        settings: the model's settings (its entry of the deployment).
        engine: the engine serving it.
        in_flight: generations running on it now (counted by the router).
    """

    settings: Settings
    engine: Engine
    in_flight: int = 0

    def load(self) -> EngineLoad:
        """The engine's own load where it keeps one (the embedded scheduler), else the generations in flight."""
        load = getattr(self.engine, "load", None)
        return load() if load is not None else EngineLoad(num_reqs=self.in_flight)


class ModelRouter:
    """Routes each generation to the engine that serves its model.

    Args:
        engines: ``(settings, engine)`` per model, in deployment order.

    Raises:
        InvalidRequest: no engine, or two engines already known to serve one id (param
            ``models[i].served_model_name``).
    """

    def __init__(self, engines: Sequence[tuple[Settings, Engine]]):
        if not engines:
            raise InvalidRequest("A deployment needs at least one model.", param="models")
        self.served = [ServedEngine(settings, engine) for settings, engine in engines]
        self._index = self._build_index()

    @classmethod
    def from_settings(cls, models: Sequence[Settings]) -> ModelRouter:
        """Build (not start) one engine per model (:func:`mcp_server.engines.create_engine`)."""
        return cls([(settings, create_engine(settings)) for settings in models])

    def _build_index(self) -> dict[str, ServedEngine]:
        index: dict[str, ServedEngine] = {}
        for position, served in enumerate(self.served):
            for card in served.engine.models:
                if card.id in index:
                    raise InvalidRequest(
                        f"Two models are served as '{card.id}': give each its own served_model_name.",
                        param=f"models[{position}].served_model_name",
                    )
                index[card.id] = served
        return index

    @property
    def models(self) -> list[ModelCard]:
        """Every engine's models, in deployment order; the first is the default."""
        return [card for served in self.served for card in served.engine.models]

    @property
    def running(self) -> int:
        """Sequences running or waiting, over every engine (see :meth:`running_by_model`)."""
        return sum(self.running_by_model().values())

    def running_by_model(self) -> dict[str, int]:
        """Each served model's running count: its engine's own where it keeps one, else its
        generations in flight (an engine serving several models counts under its first)."""
        counts = {}
        for served in self.served:
            cards = served.engine.models
            if cards:
                running = getattr(served.engine, "running", None)
                counts[cards[0].id] = running if isinstance(running, int) else served.in_flight
        return counts

    def describe(self) -> dict[str, str]:
        """The start-up summary's settings: the one engine's own, or each engine's under its first model id."""
        if len(self.served) == 1:
            return self.served[0].engine.describe()
        return {
            f"[{served.engine.models[0].id if served.engine.models else index}]": ", ".join(
                f"{name} {value}" for name, value in served.engine.describe().items()
            )
            for index, served in enumerate(self.served)
        }

    def served_engine(self, model_id: str) -> ServedEngine:
        """The engine serving ``model_id``.

        Raises:
            ModelNotFound: no engine serves it (the message lists the served models).
        """
        served = self._index.get(model_id)
        if served is None:
            raise ModelNotFound(
                f"The model '{model_id}' is not served here. Served models: "
                f"{', '.join(card.id for card in self.models)}.",
                param="model",
            )
        return served

    def load(self) -> EngineLoad:
        """The load of every engine, added up."""
        total = EngineLoad()
        for served in self.served:
            total = total + served.load()
        return total

    def model_info(self, model_id: str) -> ModelInfo:
        """Where ``model_id``'s weights come from (the engine's own answer, else its settings).

        Raises:
            ModelNotFound: as :meth:`served_engine`.
        """
        served = self.served_engine(model_id)
        describe = getattr(served.engine, "model_info", None)
        if describe is not None:
            return describe()
        path = served.settings.sglang_url or served.settings.model_path or model_id
        return ModelInfo(path, path)

    async def flush_cache(self) -> bool:
        """Flush every engine's prefix cache that can be flushed; False when one refused (busy)."""
        results = []
        for served in self.served:
            flush = getattr(served.engine, "flush_cache", None)
            if flush is not None:
                results.append(await flush())
        return all(results)

    async def start(self) -> None:
        """Start every engine together; then index their models (attached SGLang servers
        name theirs only once reached).

        Raises:
            EngineUnavailable: an engine failed to start (every engine is closed again).
            InvalidRequest: two engines serve one id.
        """
        try:
            async with anyio.create_task_group() as group:
                for served in self.served:
                    group.start_soon(served.engine.start)
        except BaseException as exc:
            await self.aclose()
            errors = getattr(exc, "exceptions", None)
            if errors:  # an ExceptionGroup: raise its first error as it is
                raise errors[0] from None
            raise
        self._index = self._build_index()
        logger.info("Serving %d model(s): %s", len(self._index), ", ".join(self._index))

    async def aclose(self) -> None:
        """Stop every engine."""
        for served in self.served:
            await served.engine.aclose()

    async def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationDelta]:
        """Generate on the engine serving ``request.model``.

        Raises:
            ModelNotFound: no engine serves the model.
            InvalidRequest, EngineUnavailable: as the engine's ``generate``.
        """
        served = self.served_engine(request.model)
        generation = served.engine.generate(request)
        served.in_flight += 1
        try:
            async for delta in generation:
                yield delta
        finally:
            served.in_flight -= 1
            await generation.aclose()  # the engine frees the sequence's slot now, not at garbage collection
