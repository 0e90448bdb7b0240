"""The SGLang worker endpoints: what the SGLang router asks of a worker, so chatcap replicas can sit behind it.

Shapes as SGLang's own server answers them and as ``sglang-router`` 0.3.2 reads them (its
``discover_metadata`` step parses ``ServerInfo`` and ``ModelInfo``; its load poller sums
``num_tokens`` over the ``/get_load`` array). The router tries ``/server_info`` and
``/model_info`` first and falls back to the ``/get_`` names on 404; both are served.

=====================================  ===================================================
``GET /server_info``                   ``served_model_name`` (the router's model id: the
``GET /get_server_info``               default model's), ``model_path``, ``version``,
                                       ``max_running_requests``, ``context_length``, and
                                       ``served_models`` (every id this server serves)
``GET /model_info``                    ``model_path``, ``tokenizer_path``, ``is_generation``,
``GET /get_model_info``                ``model_type``, ``architectures`` of the default model
``GET /get_load``                      ``[{"dp_rank": 0, "num_reqs", "num_waiting_reqs",
                                       "num_tokens"}]``, from the schedulers, all models added
``POST /flush_cache``                  drops the cached prompt prefixes while nothing runs:
                                       200, or 400 while requests are running (as SGLang);
                                       needs a key where ``/v1`` does
=====================================  ===================================================

They read the engines only; the ``GET`` ones need no key, like ``/health`` (the router
registers and polls workers without one).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from mcp_server import __version__
from mcp_server.engines.router import ModelRouter
from mcp_server.errors import ServiceError

__all__ = ["worker_routes"]

Authenticate = Callable[[str | None], Awaitable[Any]]
"""Checks an ``Authorization`` header (:meth:`mcp_server.gateway.Gateway.authenticate`)."""


def worker_routes(router: ModelRouter, authenticate: Authenticate) -> list[Route]:
    """The SGLang worker routes over the served models (see the module table).

    Args:
        router: the engines.
        authenticate: raises :class:`~mcp_server.errors.AuthenticationError` for a caller
            that may not flush the cache.
    """

    def server_info(request: Request) -> Response:
        default = router.models[0]
        served = router.served_engine(default.id)
        info = router.model_info(default.id)
        return JSONResponse({
            "served_model_name": default.id,
            "model_path": info.model_path,
            "tokenizer_path": info.tokenizer_path,
            "version": __version__,
            "context_length": default.context_length,
            "max_running_requests": served.settings.max_running_requests,
            "served_models": [card.id for card in router.models],
        })

    def model_info(request: Request) -> Response:
        info = router.model_info(router.models[0].id)
        return JSONResponse({
            "model_path": info.model_path,
            "tokenizer_path": info.tokenizer_path,
            "is_generation": True,
            "model_type": info.model_type,
            "architectures": list(info.architectures) or None,
        })

    def get_load(request: Request) -> Response:
        load = router.load()
        return JSONResponse([{
            "dp_rank": 0,
            "num_reqs": load.num_reqs,
            "num_waiting_reqs": load.num_waiting_reqs,
            "num_tokens": load.num_tokens,
        }])

    async def flush_cache(request: Request) -> Response:
        try:
            await authenticate(request.headers.get("authorization"))
        except ServiceError as exc:
            return JSONResponse(exc.to_dict(), status_code=exc.status_code, headers=exc.headers)
        if await router.flush_cache():
            return PlainTextResponse("Cache flushed.\n")
        return PlainTextResponse("Cache not flushed: requests are running. Try again when idle.\n", status_code=400)

    return [
        *(Route(path, server_info, methods=["GET"]) for path in ("/server_info", "/get_server_info")),
        *(Route(path, model_info, methods=["GET"]) for path in ("/model_info", "/get_model_info")),
        Route("/get_load", get_load, methods=["GET"]),
        Route("/flush_cache", flush_cache, methods=["POST"]),
    ]
