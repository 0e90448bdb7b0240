"""The composition root: builds the engine, the service and every surface into one app.

``create_app`` has no module-level state: two apps can live in one process. One event loop
serves REST, MCP over streamable HTTP and the engine's scheduler.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

import anyio
from mcp.server.lowlevel import Server
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.routing import Route

from mcp_server.capability.loader import MCP_PATH, Capability, load_capability
from mcp_server.capability.schemas import PROJECT_ROOT
from mcp_server.engines.base import Engine
from mcp_server.engines.router import ModelRouter
from mcp_server.errors import InvalidRequest, ServiceError
from mcp_server.gateway import Gateway, GatewayMiddleware
from mcp_server.generate.skill import SkillCatalog
from mcp_server.service import ChatService
from mcp_server.settings import Settings
from mcp_server.surfaces.loading import LoadingGate, LoadState
from mcp_server.surfaces.mcp import (
    build_server,
    run_stdio,
    streamable_http_session_manager,
)
from mcp_server.surfaces.mcp_security import KeylessHostOriginCheck, cors_middleware, transport_security
from mcp_server.surfaces.playground import playground_routes
from mcp_server.surfaces.rest import error_response, http_exception_handler, rest_routes
from mcp_server.surfaces.sglang_worker import worker_routes
from mcp_server.surfaces.summary import startup_summary

__all__ = ["Runtime", "build_runtime", "create_app", "run_mcp_stdio"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Runtime:
    """The parts every surface shares: capability, engine (one per model, behind the router),
    chat service, gateway, MCP server."""

    capability: Capability
    engine: ModelRouter
    service: ChatService
    gateway: Gateway
    mcp_server: Server


def build_runtime(
    settings: Settings, engine: Engine | None = None, models: Sequence[Settings] | None = None
) -> Runtime:
    """Load and validate the capability, then build engines, service, gateway and MCP server.

    The capability is checked first: a broken file raises before any engine is built.
    The gateway opens its database when ``settings.data_dir`` is set.

    Args:
        settings: the server's settings.
        engine: an engine to serve instead of the ones ``models`` name.
        models: one settings per served model (:class:`mcp_server.deployment.Deployment`);
            None serves the one model ``settings`` describes.

    Raises:
        CapabilityError: the capability file is invalid; the message names the path.
        InvalidRequest: a model's ``engine`` names no known engine, or two models share an id.
    """
    capability = load_capability(settings.capability)
    if engine is None:
        router = ModelRouter.from_settings(models or (settings,))
    else:
        router = engine if isinstance(engine, ModelRouter) else ModelRouter([(settings, engine)])
    service = ChatService(router)
    gateway = _open_gateway(service, settings, capability.api_paths)
    return Runtime(capability, router, service, gateway, build_server(gateway, capability, PROJECT_ROOT))


def _open_gateway(service: ChatService, settings: Settings, api_paths: frozenset[str]) -> Gateway:
    """:meth:`Gateway.build`, a store that cannot be opened reported in one line.

    Raises:
        InvalidRequest: the data directory, ``--database-url`` or ``--redis-url`` does not open
            (not a directory, not a database, a bad URL): the message is the cause's.
    """
    try:
        return Gateway.build(service, settings, api_paths)
    except Exception as exc:  # SQLAlchemy's errors too, whose module is loaded only with a database
        if not isinstance(exc, (OSError, ValueError)) and not type(exc).__module__.startswith("sqlalchemy"):
            raise
        raise InvalidRequest(f"The gateway's data directory, database or Redis cannot be used: {exc}") from None


async def run_mcp_stdio(settings: Settings, models: Sequence[Settings] | None = None) -> None:
    """Start the engines and serve MCP over stdin/stdout until the client disconnects."""
    runtime = build_runtime(settings, models=models)
    started = time.monotonic()
    await runtime.engine.start()
    logger.info(startup_summary(runtime.gateway, settings, time.monotonic() - started))
    try:
        await run_stdio(runtime.mcp_server)
    finally:
        await runtime.engine.aclose()
        runtime.gateway.close()


def create_app(
    settings: Settings, *, engine: Engine | None = None, models: Sequence[Settings] | None = None
) -> Starlette:
    """Build the ASGI app: REST ``/v1``, MCP at ``/mcp``, health, metrics, OpenAPI, skills, the
    SGLang worker endpoints (:mod:`mcp_server.surfaces.sglang_worker`) and the playground page at ``/``.

    The capability is loaded and validated first: a broken file raises before anything
    is built. The engine starts (loads the model) in the background once the app's
    lifespan has begun, so the server answers meanwhile: ``/health`` with 503
    ``{"status": "loading"}``, other paths with 503 (:mod:`.surfaces.loading`). Then it
    logs the start-up summary line (:mod:`.surfaces.summary`). ``app.state.load`` is the
    :class:`~mcp_server.surfaces.loading.LoadState`: its ``error`` says why a load failed,
    and its ``on_failure`` is called then (``chatcap serve`` stops the server with it).
    Every request passes CORS (for ``--allowed-origins``), the gateway middleware (body
    limit, API keys, HTTP metrics) and, without a key, the ``Host``/``Origin`` check of
    ``/v1``. The server calls ``app.state.begin_shutdown(grace)``
    (:meth:`Gateway.begin_shutdown`) when it stops accepting requests. With ``settings.workers``
    above 1, MCP runs stateless (no ``Mcp-Session-Id``): a worker's sessions live in its
    process, and the next request of a session may reach another worker.

    Args:
        settings: runtime settings.
        engine: an engine to serve instead of the ones ``settings`` and ``models`` name
            (it is still started and closed by the app).
        models: one settings per served model; None serves the one ``settings`` describes.

    Returns:
        A Starlette app.

    Raises:
        CapabilityError: the capability file is invalid; the message names the path.
    """
    runtime = build_runtime(settings, engine, models)
    engine = runtime.engine
    security = transport_security(settings)
    session_manager, mcp_app = streamable_http_session_manager(
        runtime.mcp_server, settings.mcp_max_sessions_per_client, security, stateless=settings.workers > 1
    )
    routes = rest_routes(
        runtime.gateway, runtime.capability.rest_paths, SkillCatalog(runtime.capability), settings.shutdown_grace
    )
    routes += worker_routes(runtime.engine, runtime.gateway.authenticate)
    routes.append(Route(MCP_PATH, mcp_app))
    routes += playground_routes()

    load = LoadState()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette):
        try:
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(_start_engine, runtime, settings, load)
                async with session_manager.run():
                    yield
                tasks.cancel_scope.cancel()  # a load still running when the server stops
        finally:
            await engine.aclose()
            runtime.gateway.close()

    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        middleware=[
            *cors_middleware(settings),
            Middleware(LoadingGate, state=load),
            Middleware(GatewayMiddleware, gateway=runtime.gateway, error_response=error_response),
            Middleware(KeylessHostOriginCheck, security=security, error_response=error_response,
                       prefixes=tuple({"/" + p.strip("/").split("/")[0] for p in runtime.capability.rest_paths.values()})),
        ],
        exception_handlers={HTTPException: http_exception_handler, Exception: http_exception_handler},
    )
    app.state.load = load
    app.state.begin_shutdown = runtime.gateway.begin_shutdown
    return app


async def _start_engine(runtime: Runtime, settings: Settings, load: LoadState) -> None:
    """Load the model, then open the gate and log the summary; a failure goes to ``load``."""
    started = time.monotonic()
    try:
        await runtime.engine.start()
    except Exception as exc:
        if not isinstance(exc, ServiceError):  # a bug: keep its traceback
            logger.exception("The engine failed to start")
        load.failed(exc)
        return
    load.ready()
    url = f"http://{settings.host}:{settings.port}"
    logger.info(startup_summary(runtime.gateway, settings, time.monotonic() - started, url))
