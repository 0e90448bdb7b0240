"""The MCP surface: a lowlevel ``mcp.server.Server`` built from the capability.

Tools are generated (:func:`mcp_server.generate.tools.mcp_tools`) from the capability's ``mcp``
adapter and ``schemas/``; their schemas are published unchanged. Each call validates its
arguments against the tool's ``inputSchema`` (failure: ``isError`` naming the failing
path), runs through the same :class:`~mcp_server.gateway.Gateway` as REST, and returns
``structuredContent`` that matches the ``outputSchema`` plus the same JSON as text.
Resources, resource templates and completion come from
:class:`~mcp_server.surfaces.mcp_resources.ResourceCatalog`; failures are also sent as
log notifications.
Handlers know nothing of the transport: :func:`streamable_http_app` and
:func:`run_stdio` bind the one server to HTTP or stdio.
"""

from __future__ import annotations

import json
import logging
import warnings
import weakref
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import mcp_types as types
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel import Server
from mcp.server.stdio import stdio_server
from mcp.server.streamable_http_manager import (
    StreamableHTTPASGIApp,
    StreamableHTTPSessionManager,
)
from mcp.server.transport_security import TransportSecuritySettings
from mcp.shared.exceptions import MCPDeprecationWarning, MCPError
from mcp.shared.message import SessionMessage
from mcp_types import INVALID_PARAMS
from starlette.types import ASGIApp

from mcp_server import __version__
from mcp_server.capability.loader import Capability
from mcp_server.capability.schemas import validate_instance
from mcp_server.errors import CapabilityError, InvalidRequest, ServiceError
from mcp_server.gateway import Gateway, request_key, request_tenant, tool_call_idempotency_key
from mcp_server.generate.tools import TOOL_SHAPES, mcp_tools
from mcp_server.protocol.request import parse_request
from mcp_server.surfaces.mcp_resources import TEMPLATES, ResourceCatalog
from mcp_server.surfaces.mcp_security import OneHostOneOrigin
from mcp_server.surfaces.mcp_sessions import SESSION_IDLE_TIMEOUT, SessionQuota

__all__ = ["build_server", "run_stdio", "served_models_enum", "streamable_http_session_manager"]

logger = logging.getLogger(__name__)

LOG_LEVELS = ("debug", "info", "notice", "warning", "error", "critical", "alert", "emergency")
"""MCP log levels, lowest first (RFC 5424 severities, as the MCP logging utility names them)."""

DEFAULT_LOG_LEVEL = "warning"
"""The level a connection gets log notifications at before it sends ``logging/setLevel``."""

ToolHandler = Callable[[ServerRequestContext, dict[str, Any]], Awaitable[dict[str, Any]]]


def _tool_result(structured: dict[str, Any]) -> types.CallToolResult:
    return types.CallToolResult(
        content=[types.TextContent(type="text", text=json.dumps(structured, ensure_ascii=False))],
        structured_content=structured,
    )


def _error_result(exc: ServiceError) -> types.CallToolResult:
    error = exc.to_dict()["error"]
    where = f" (at {error['param']})" if error["param"] else ""
    return types.CallToolResult(
        content=[types.TextContent(type="text", text=f"{error['message']}{where}")],
        structured_content=None,
        is_error=True,
    )


def _tool_handlers(gateway: Gateway) -> dict[str, ToolHandler]:
    """Map generated tool names to their implementations, billed through the gateway.

    Over HTTP the caller's key is the one the gateway middleware resolved for the request
    (``ctx.request``); over stdio there is none. A call's idempotency key (``_meta.idempotency_key``,
    else the HTTP request's ``Idempotency-Key``/``X-Request-Id``) makes a retried call answered
    and billed once, as on ``/v1`` (:mod:`mcp_server.gateway.idempotency`).
    """

    async def completion(ctx: ServerRequestContext, body: dict[str, Any]) -> dict[str, Any]:
        headers = ctx.request.headers.raw if ctx.request is not None else None
        return await gateway.complete(
            parse_request(body), progress=await progress_reporter(ctx), key=request_key(ctx.request),
            tenant=request_tenant(ctx.request), idempotency_key=tool_call_idempotency_key(ctx.meta, headers),
        )

    async def progress_reporter(ctx: ServerRequestContext):
        async def report(tokens: int) -> None:
            await ctx.session.report_progress(float(tokens), message=f"{tokens} tokens generated")

        return report

    async def create_chat_completion(ctx: ServerRequestContext, args: dict[str, Any]) -> dict[str, Any]:
        # The request schema lets unknown fields through (OpenAI clients send many); the
        # fields this tool does not offer are refused, not ignored.
        for name in TOOL_SHAPES["create-chat-completion"].drop:
            if name in args:
                raise InvalidRequest(f"'{name}' is not a parameter of this tool; it returns one whole "
                                     "chat.completion.", param=name)
        return await completion(ctx, args)

    async def list_models(ctx: ServerRequestContext, args: dict[str, Any]) -> dict[str, Any]:
        return gateway.service.list_models()

    async def chat(ctx: ServerRequestContext, args: dict[str, Any]) -> dict[str, Any]:
        messages = [{"role": "user", "content": args["prompt"]}]
        if args.get("system"):
            messages.insert(0, {"role": "system", "content": args["system"]})
        body: dict[str, Any] = {"messages": messages}  # no model: the gateway resolves the default
        for key in ("model", "max_tokens", "temperature"):
            if key in args:
                body[key] = args[key]
        schema = args.get("response_schema")
        if schema is not None:
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "response", "schema": schema, "strict": True},
            }
        answer = await completion(ctx, body)
        text = answer["choices"][0]["message"]["content"]
        result: dict[str, Any] = {"text": text, "completion": answer}
        if schema is not None and answer["choices"][0]["finish_reason"] == "stop":
            result["parsed"] = json.loads(text)  # a finished answer validates (constraints.validate_output)
        return result

    return {
        "create-chat-completion": create_chat_completion,
        "list-models": list_models,
        "chat": chat,
    }


def build_server(gateway: Gateway, capability: Capability, root: Path) -> Server:
    """Build the MCP server for a capability.

    Args:
        gateway: the gateway (in front of the chat service) the tools run on.
        capability: the loaded capability (its ``mcp`` adapter names the tools).
        root: the project root holding ``schemas/`` and ``skills/`` (for resources).

    Returns:
        A lowlevel MCP server with tools, resources and resource templates
        (:mod:`mcp_server.surfaces.mcp_resources`), ``completion/complete`` and logging:
        ``logging/setLevel`` sets the connection's level (default :data:`DEFAULT_LOG_LEVEL`),
        answered by an ``info`` note of the loaded models; a failed tool call sends a
        ``warning`` (client error) or ``error`` notification with the OpenAI error fields.

    Raises:
        CapabilityError: a tool in the capability has no implementation here.
    """
    tools = {t["name"]: t for t in mcp_tools(capability)}
    handlers = _tool_handlers(gateway)
    missing = sorted(set(tools) - set(handlers))
    if missing:
        raise CapabilityError(f"capability.exposes[mcp].tools: no implementation for {missing}")
    resources = ResourceCatalog(root, capability.path, lambda: gateway.service.list_models()["data"])
    log_levels: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()

    async def log(ctx: ServerRequestContext, level: str, data: dict[str, Any]) -> None:
        """Send ``notifications/message`` when ``level`` reaches the client's ``logging/setLevel``."""
        threshold = log_levels.get(ctx.session, DEFAULT_LOG_LEVEL)
        if LOG_LEVELS.index(level) >= LOG_LEVELS.index(threshold):
            with warnings.catch_warnings(category=MCPDeprecationWarning, action="ignore"):
                await ctx.session.send_log_message(level, data, logger="chatcap", related_request_id=ctx.request_id)

    async def on_list_tools(ctx, params) -> types.ListToolsResult:
        served = [card.id for card in gateway.service.engine.models]
        return types.ListToolsResult(tools=[types.Tool.model_validate(served_models_enum(t, served)) for t in tools.values()])

    async def on_call_tool(ctx, params: types.CallToolRequestParams) -> types.CallToolResult:
        tool = tools.get(params.name)
        if tool is None:
            return _error_result(InvalidRequest(f"Unknown tool '{params.name}'.", param="name"))
        args = params.arguments or {}
        try:
            validate_instance(tool["inputSchema"], args)
            return _tool_result(await handlers[params.name](ctx, args))
        except ServiceError as exc:
            level = "warning" if exc.status_code < 500 else "error"
            await log(ctx, level, {"event": "request_failed", "tool": params.name, **exc.to_dict()["error"]})
            return _error_result(exc)

    async def on_list_resources(ctx, params) -> types.ListResourcesResult:
        return types.ListResourcesResult(resources=resources.list())

    async def on_list_resource_templates(ctx, params) -> types.ListResourceTemplatesResult:
        return types.ListResourceTemplatesResult(resource_templates=TEMPLATES)

    async def on_read_resource(ctx, params: types.ReadResourceRequestParams) -> types.ReadResourceResult:
        contents = resources.read(str(params.uri))
        if contents is None:
            raise MCPError(INVALID_PARAMS, f"Unknown resource '{params.uri}'.")
        return types.ReadResourceResult(contents=[contents])

    async def on_completion(ctx, params: types.CompleteRequestParams) -> types.CompleteResult:
        context = params.context.arguments if params.context else None
        return types.CompleteResult(
            completion=resources.complete(params.argument.name, params.argument.value, context)
        )

    async def on_set_logging_level(ctx, params: types.SetLevelRequestParams) -> types.EmptyResult:
        log_levels[ctx.session] = params.level
        engine = gateway.service.engine
        models = [m.id for m in engine.models]
        engines = sorted({type(s.engine).__name__ for s in getattr(engine, "served", ())}) or [type(engine).__name__]
        await log(ctx, "info", {"event": "model_loaded", "models": models, "engine": ", ".join(engines)})
        return types.EmptyResult()

    with warnings.catch_warnings(category=MCPDeprecationWarning, action="ignore"):
        # logging/setLevel is deprecated from protocol 2026-07-28 on (SEP-2577); clients of
        # the earlier versions still use it.
        return Server(
            capability.mcp.namespace,
            version=__version__,
            title=capability.info.label,
            description=capability.mcp.description,
            on_list_tools=on_list_tools,
            on_call_tool=on_call_tool,
            on_list_resources=on_list_resources,
            on_list_resource_templates=on_list_resource_templates,
            on_read_resource=on_read_resource,
            on_completion=on_completion,
            on_set_logging_level=on_set_logging_level,
        )


def served_models_enum(tool: dict[str, Any], served: list[str]) -> dict[str, Any]:
    """``tool`` with its ``model`` argument limited to the served ids (``enum``), as this server
    publishes it; the generated file has no such list, since what is served is known at run time.

    A call naming another id still reaches the service, whose 404 lists the served models.
    """
    properties = tool["inputSchema"].get("properties", {})
    if "model" not in properties:
        return tool
    model = {**properties["model"], "enum": served}
    return {**tool, "inputSchema": {**tool["inputSchema"], "properties": {**properties, "model": model}}}


def streamable_http_session_manager(
    server: Server, max_sessions_per_client: int, security: TransportSecuritySettings | None = None,
    stateless: bool = False,
) -> tuple[StreamableHTTPSessionManager, ASGIApp]:
    """A streamable-HTTP session manager for ``server`` and the ASGI app to mount at ``/mcp``.

    Sessions close after :data:`SESSION_IDLE_TIMEOUT` seconds without a request, and one
    caller holds at most ``max_sessions_per_client`` (:class:`SessionQuota`).

    Args:
        server: the MCP server.
        max_sessions_per_client: open sessions one key (or client address) may hold.
        security: the ``Host``/``Origin`` checks (:func:`.mcp_security.transport_security`); None checks
            neither.
        stateless: answer every request on its own, with no session (the SDK's stateless
            mode), for ``--workers`` above 1: no session outlives its request, so none is capped.

    The caller runs ``manager.run()`` in its lifespan.
    """
    manager = StreamableHTTPSessionManager(
        app=server, session_idle_timeout=SESSION_IDLE_TIMEOUT, security_settings=security, stateless=stateless,
    )
    return manager, OneHostOneOrigin(SessionQuota(StreamableHTTPASGIApp(manager), max_sessions_per_client))


async def run_stdio(server: Server) -> None:
    """Serve MCP over stdin/stdout until the client closes the stream.

    A line that is not a JSON-RPC message (not JSON, or holding a lone UTF-16 surrogate)
    is answered with a ``-32700`` parse error whose ``id`` is null, as JSON-RPC 2.0 asks
    and as the HTTP transport answers; the SDK alone would drop it and leave the client
    waiting.
    """
    async with stdio_server() as (read_stream, write_stream):
        messages, received = anyio.create_memory_object_stream[SessionMessage | Exception](0)

        async def answer_parse_errors() -> None:
            async with messages:
                async for item in read_stream:
                    if isinstance(item, Exception):
                        error = types.ErrorData(code=types.PARSE_ERROR, message=f"Parse error: {item}")
                        await write_stream.send(SessionMessage(types.JSONRPCError(jsonrpc="2.0", id=None, error=error)))
                    else:
                        await messages.send(item)

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(answer_parse_errors)
            await server.run(received, write_stream, server.create_initialization_options())
