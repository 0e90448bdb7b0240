"""The composition root: builds the engine, the service and every surface into one app.

``create_app`` has no module-level state: two apps can live in one process. One event loop
serves REST, MCP over streamable HTTP and the engine's scheduler.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass

from mcp.server.lowlevel import Server

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from mcp_server.engine import create_engine
from mcp_server.engine.base import Engine
from mcp_server.errors import ServiceError
from mcp_server.mcp_surface import build_server, run_stdio, streamable_http_session_manager
from mcp_server.rest import error_response, http_exception_handler, require_api_key, rest_routes
from mcp_server.schemas import PROJECT_ROOT
from mcp_server.service import ChatService
from mcp_server.settings import Settings
from mcp_server.spec import Capability, load_capability

__all__ = ["Runtime", "build_runtime", "create_app", "run_mcp_stdio"]

logger = logging.getLogger(__name__)


class _BearerGuard:
    """ASGI wrapper that applies :func:`require_api_key` to an inner app (``/mcp``)."""

    def __init__(self, app: ASGIApp, api_key: str | None):
        self.app = app
        self.api_key = api_key

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            try:
                require_api_key(Request(scope), self.api_key)
            except ServiceError as exc:
                await error_response(exc)(scope, receive, send)
                return
        await self.app(scope, receive, send)


@dataclass(frozen=True)
class Runtime:
    """The parts every surface shares: capability, engine, chat service and MCP server."""

    capability: Capability
    engine: Engine
    service: ChatService
    mcp_server: Server


def build_runtime(settings: Settings, engine: Engine | None = None) -> Runtime:
    """Load and validate the capability, then build engine, service and MCP server.

    The capability is checked first: a broken file raises before any engine is built.

    Raises:
        CapabilityError: the capability file is invalid; the message names the path.
        InvalidRequest: ``settings.engine`` names no known engine.
    """
    capability = load_capability(settings.capability_path)
    engine = engine if engine is not None else create_engine(settings)
    service = ChatService(engine)
    return Runtime(capability, engine, service, build_server(service, capability, PROJECT_ROOT))


async def run_mcp_stdio(settings: Settings) -> None:
    """Start the engine and serve MCP over stdin/stdout until the client disconnects."""
    runtime = build_runtime(settings)
    await runtime.engine.start()
    try:
        await run_stdio(runtime.mcp_server)
    finally:
        await runtime.engine.aclose()


def create_app(settings: Settings, *, engine: Engine | None = None) -> Starlette:
    """Build the ASGI app: REST ``/v1``, MCP at ``/mcp``, health, OpenAPI and skills.

    The capability is loaded and validated first: a broken file raises before anything
    is built. The engine starts (loads the model) in the app's lifespan.

    Args:
        settings: runtime settings.
        engine: an engine to serve instead of the one ``settings`` names (it is still
            started and closed by the app).

    Returns:
        A Starlette app.

    Raises:
        CapabilityError: the capability file is invalid; the message names the path.
    """
    runtime = build_runtime(settings, engine)
    engine = runtime.engine
    session_manager, mcp_app = streamable_http_session_manager(runtime.mcp_server)
    routes = rest_routes(runtime.service, runtime.capability.rest_paths, settings.api_key)
    routes.append(Route("/mcp", _BearerGuard(mcp_app, settings.api_key)))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette):
        await engine.start()
        try:
            async with session_manager.run():
                yield
        finally:
            await engine.aclose()

    return Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={HTTPException: http_exception_handler, Exception: http_exception_handler},
    )
