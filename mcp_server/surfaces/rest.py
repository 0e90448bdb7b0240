"""The REST surface: OpenAI-compatible ``/v1`` routes plus health, OpenAPI and skills.

Routes are thin: they decode the body, call :class:`~mcp_server.service.ChatService`, and
turn the result (or a :class:`~mcp_server.errors.ServiceError`) into a response. Only this
module builds HTTP responses. Paths come from the capability's ``rest`` adapter.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from sse_starlette import EventSourceResponse
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from mcp_server.capability.schemas import openapi_document
from mcp_server.errors import InvalidRequest, ServiceError
from mcp_server.gateway import Gateway, idempotency_key, request_key, request_tenant
from mcp_server.gateway.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from mcp_server.generate.skill import SkillCatalog
from mcp_server.protocol.request import parse_request
from mcp_server.surfaces.sse import coalesce, sse_events

__all__ = ["error_response", "http_exception_handler", "rest_routes"]

logger = logging.getLogger(__name__)


def error_response(exc: ServiceError) -> JSONResponse:
    """Render a service error as the OpenAI envelope with its HTTP status (and headers)."""
    return JSONResponse(exc.to_dict(), status_code=exc.status_code, headers=exc.headers)


async def http_exception_handler(request: Request, exc: Exception) -> JSONResponse:
    """Starlette's own errors (unknown path 404, wrong method 405) in the OpenAI envelope."""
    status = getattr(exc, "status_code", 500)
    detail = getattr(exc, "detail", "Internal server error")
    if status >= 500:
        logger.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
        detail = "The server had an error while processing the request."
    error = ServiceError(f"{detail}: {request.method} {request.url.path}" if status in (404, 405) else detail)
    error.status_code = status
    error.error_type = "invalid_request_error" if status < 500 else "server_error"
    return error_response(error)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


async def _json_body(request: Request) -> Any:
    """Decode the body as strict JSON (RFC 8259: no ``NaN`` or ``Infinity``).

    Raises:
        InvalidRequest: (code ``invalid_json``) the body is not JSON, or (code
            ``client_disconnected``) the client hung up before sending all of it; that one
            is logged as one line, since nobody is left to read the answer.
    """
    try:
        raw = await request.body()
    except ClientDisconnect:
        logger.info("client hung up during the body of %s %s", request.method, request.url.path)
        raise InvalidRequest("The client closed the connection before sending the whole body.",
                             code="client_disconnected") from None
    try:
        return json.loads(raw, parse_constant=_reject_constant)
    except RecursionError:
        raise InvalidRequest("The request body nests JSON too deeply.", code="invalid_json") from None
    except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError is a ValueError
        raise InvalidRequest(
            f"The request body is not valid JSON: {exc}", code="invalid_json"
        ) from None


def rest_routes(gateway: Gateway, paths: dict[str, str], skills: SkillCatalog, shutdown_grace: float) -> list[Route]:
    """Build the REST routes.

    Authentication happens before them, in :class:`~mcp_server.gateway.GatewayMiddleware`.

    Args:
        gateway: the gateway in front of the chat service.
        paths: operation name -> path, from the capability's ``rest`` adapter; must hold
            ``create-chat-completion`` and ``list-models``.
        skills: the skills to publish (rendered from the served capability).
        shutdown_grace: seconds a stream in flight may go on after the server is told to stop.

    Returns:
        Starlette routes for chat completions, models, health, metrics, OpenAPI and skills.
    """

    def guarded(handler):
        async def endpoint(request: Request) -> Response:
            try:
                return await handler(request)
            except ServiceError as exc:
                return error_response(exc)
            except RecursionError:  # the bounds on nesting should come first; never a bare 500
                logger.warning("RecursionError on %s %s", request.method, request.url.path)
                return error_response(InvalidRequest("The request nests too deeply to process.", code="limit_exceeded"))

        return endpoint

    async def create_chat_completion(request: Request) -> Response:
        chat = parse_request(await _json_body(request))
        key, tenant, once = request_key(request), request_tenant(request), idempotency_key(request.headers.raw)
        if not chat.stream:
            return JSONResponse(await gateway.complete(chat, key=key, tenant=tenant, idempotency_key=once))
        chunks = gateway.stream(chat, key=key, tenant=tenant, idempotency_key=once)
        first = await anext(chunks)  # raises before any byte is sent

        async def replay():
            try:
                yield first
                async for chunk in chunks:
                    yield chunk
            finally:
                await chunks.aclose()

        # The gateway cuts the generation at the grace (an error event, then [DONE]); the
        # response's own cut comes a second later, for those events to go out.
        return EventSourceResponse(coalesce(sse_events(replay())), ping=15, shutdown_grace_period=shutdown_grace + 1)

    async def list_models(request: Request) -> Response:
        return JSONResponse(gateway.service.list_models())

    async def retrieve_model(request: Request) -> Response:
        return JSONResponse(gateway.service.retrieve_model(request.path_params["model"]))

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok", "models": [m.id for m in gateway.service.engine.models]})

    async def metrics(request: Request) -> Response:
        return Response(gateway.metrics.render(), media_type=METRICS_CONTENT_TYPE)

    async def openapi(request: Request) -> Response:
        return JSONResponse(openapi_document())

    async def skills_index(request: Request) -> Response:
        return JSONResponse({"skills": skills.index()})

    async def skill(request: Request) -> Response:
        name = request.path_params["name"]
        try:
            return JSONResponse(skills.entry(name))
        except KeyError:
            raise HTTPException(404, f"Unknown skill '{name}'") from None

    async def skill_download(request: Request) -> Response:
        name = request.path_params["name"]
        try:
            # The archive names the URL it was fetched from: its helper script calls this server.
            archive = skills.archive(name, base_url=str(request.base_url).rstrip("/") + "/v1")
        except KeyError:
            raise HTTPException(404, f"Unknown skill '{name}'") from None
        return Response(
            archive,
            media_type="application/zip",
            headers={"Content-Disposition": f'attachment; filename="{name}.zip"'},
        )

    models_path = paths["list-models"]
    return [
        Route(paths["create-chat-completion"], guarded(create_chat_completion), methods=["POST"]),
        Route(models_path, guarded(list_models), methods=["GET"]),
        Route(models_path + "/{model:path}", guarded(retrieve_model), methods=["GET"]),
        Route("/health", health, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        Route("/openapi.json", openapi, methods=["GET"]),
        Route("/skills", skills_index, methods=["GET"]),
        Route("/skills/{name}", skill, methods=["GET"]),
        Route("/skills/{name}/download", skill_download, methods=["GET"]),
    ]
