"""The server answers while its model loads: ``/health`` says ``loading``, other routes 503.

``chatcap serve`` binds its port first and loads the model behind it, as ``llama-server``
does: a load balancer, a test harness or a person with curl can tell "loading" (503
``{"status": "loading"}`` on ``/health``) from "down" (connection refused) and from "ready"
(200). Every other path answers 503 with the OpenAI error envelope (code
``model_loading``) until the model is ready.

Usage::

    state = LoadState()
    app = Starlette(..., middleware=[Middleware(LoadingGate, state=state), ...])  # outermost
    ...                              # load the model, then:
    state.ready()                    # or state.failed(exc)
"""

from __future__ import annotations

from collections.abc import Callable

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from mcp_server.errors import EngineUnavailable

__all__ = ["HEALTH_PATH", "LoadState", "LoadingGate"]

HEALTH_PATH = "/health"


class LoadState:
    """Where the model load the server started with is: loading, ready or failed.

    Attributes:
        is_ready: the model is loaded; requests pass through.
        error: why loading failed, or None.
        on_failure: called once when loading fails (``chatcap serve`` stops the server
            with it), or None.
    """

    def __init__(self) -> None:
        self.is_ready = False
        self.error: BaseException | None = None
        self.on_failure: Callable[[], None] | None = None

    def ready(self) -> None:
        """Let requests through from now on."""
        self.is_ready = True

    def failed(self, error: BaseException) -> None:
        """Record why loading failed (requests keep getting 503) and call :attr:`on_failure`."""
        self.error = error
        if self.on_failure is not None:
            self.on_failure()


class LoadingGate:
    """ASGI middleware that answers every HTTP request with a 503 until the load is ready.

    Args:
        app: the app to guard.
        state: the load it waits for.
    """

    def __init__(self, app: ASGIApp, state: LoadState):
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        state = self.state
        if state.is_ready or scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["path"] == HEALTH_PATH:
            response = JSONResponse({"status": "loading" if state.error is None else "failed"}, status_code=503)
        elif state.error is None:
            error = EngineUnavailable(
                "The model is still loading; retry when GET /health answers 200.", code="model_loading"
            )
            response = JSONResponse(error.to_dict(), status_code=error.status_code, headers={"Retry-After": "1"})
        else:
            error = EngineUnavailable("The model failed to load; the server is stopping.", code="model_load_failed")
            response = JSONResponse(error.to_dict(), status_code=error.status_code)
        await response(scope, receive, send)
