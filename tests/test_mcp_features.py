"""MCP resource templates, argument completion and logging, through the official MCP client over HTTP."""

from __future__ import annotations

from urllib.parse import quote

import anyio
import httpx2
import mcp_types as types
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from mcp_server.capability.schemas import schema_names

MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"


def client(server, **options) -> Client:
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {server.api_key}"}, timeout=300)
    return Client(streamable_http_client(f"{server.base_url}/mcp", http_client=http), **options)


def test_resource_templates_expand_to_readable_resources(server):
    async def main():
        async with client(server) as mcp:
            templates = {t.name: t.uri_template for t in (await mcp.list_resource_templates()).resource_templates}
            assert templates == {
                "schema": "chatcap://schemas/{name}",
                "skill-file": "chatcap://skills/{skill}/{path}",
                "model": "chatcap://models/{model}",
            }
            listed = {str(r.uri) for r in (await mcp.list_resources()).resources}
            for uri in (
                "chatcap://schemas/chat-completion-request.json",
                "chatcap://skills/chat-completions/SKILL.md",
                "chatcap://skills/chat-completions/references/parameters.md",
                f"chatcap://models/{quote(MODEL, safe='')}",
            ):
                assert uri in listed
                text = (await mcp.read_resource(uri)).contents[0].text
                assert text
            assert MODEL in (await mcp.read_resource(f"chatcap://models/{quote(MODEL, safe='')}")).contents[0].text

    anyio.run(main)


def test_completion_offers_models_schemas_and_skill_files(server):
    async def main():
        async with client(server) as mcp:
            def ref(template: str) -> types.ResourceTemplateReference:
                return types.ResourceTemplateReference(type="ref/resource", uri=template)

            models = await mcp.complete(ref("chatcap://models/{model}"), {"name": "model", "value": "Hugging"})
            assert models.completion.values == [MODEL]
            schemas = await mcp.complete(ref("chatcap://schemas/{name}"), {"name": "name", "value": "chat-"})
            assert set(schemas.completion.values) == {f"{n}.json" for n in schema_names() if n.startswith("chat-")}
            paths = await mcp.complete(
                ref("chatcap://skills/{skill}/{path}"), {"name": "path", "value": "ref"},
                context_arguments={"skill": "chat-completions"},
            )
            assert paths.completion.values == ["references/parameters.md"]
            none = await mcp.complete(ref("chatcap://models/{model}"), {"name": "model", "value": "gpt"})
            assert none.completion.values == []

    anyio.run(main)


@pytest.mark.parametrize("mode", ["legacy", "auto"])
def test_logging_level_and_failure_notifications(server, mode):
    """``legacy``: initialize handshake and ``logging/setLevel``; ``auto``: the per-request opt-in."""
    received: list[types.LoggingMessageNotificationParams] = []

    async def on_log(params: types.LoggingMessageNotificationParams) -> None:
        received.append(params)

    async def main():
        async with client(server, logging_callback=on_log, log_level="info", mode=mode) as mcp:
            capabilities = mcp.server_capabilities
            assert capabilities.logging is not None and capabilities.completions is not None
            if mode == "legacy":
                await mcp.set_logging_level("info")
            failed = await mcp.call_tool("create-chat-completion", {"messages": [{"role": "user", "content": "hi"}],
                                                                     "model": "no-such-model"})
            assert failed.is_error
            await anyio.sleep(0.5)

    anyio.run(main)
    events = {(m.level, m.data["event"]) for m in received}
    assert ("warning", "request_failed") in events, received
    if mode == "legacy":
        loaded = next(m for m in received if m.data["event"] == "model_loaded")
        assert loaded.level == "info" and loaded.data["models"] == [MODEL]
    failure = next(m for m in received if m.data["event"] == "request_failed")
    assert failure.data["param"] == "model" and failure.data["tool"] == "create-chat-completion"
