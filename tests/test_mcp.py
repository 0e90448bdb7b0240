"""End to end over MCP: the official MCP client over stdio (spawning ``chatcap mcp``) and HTTP."""

from __future__ import annotations

import json
import sys

import anyio
import httpx2
import jsonschema
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client

from mcp_server.capability.loader import load_capability
from mcp_server.capability.schemas import load_schema
from mcp_server.generate.tools import mcp_tools
from mcp_server.protocol.request import UNSUPPORTED
from mcp_server.settings import Settings
from mcp_server.surfaces.mcp import served_models_enum
from tests.live_server import ROOT

MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"


def stdio_client() -> Client:
    params = StdioServerParameters(command=sys.executable, args=["-m", "mcp_server", "mcp"], cwd=str(ROOT))
    return Client(params, read_timeout_seconds=300)


def http_client(server) -> Client:
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {server.api_key}"}, timeout=300)
    return Client(streamable_http_client(f"{server.base_url}/mcp", http_client=http))


async def check_tools_and_calls(client: Client) -> None:
    tools = {t.name: t for t in (await client.list_tools()).tools}
    generated = {t["name"]: t for t in mcp_tools(load_capability())}
    assert set(tools) == set(generated) == {"create-chat-completion", "list-models", "chat"}
    for name, tool in tools.items():  # the generated tools, the `model` argument limited to the served ids
        assert tool.input_schema == served_models_enum(generated[name], [MODEL])["inputSchema"]
        assert tool.output_schema == generated[name]["outputSchema"]
    request_schema = load_schema("chat-completion-request.json")
    assert set(tools["create-chat-completion"].input_schema["properties"]) == (
        set(request_schema["properties"]) - {"stream", "stream_options", *UNSUPPORTED}
    )

    progress: list[float] = []

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        progress.append(value)

    result = await client.call_tool(
        "create-chat-completion",
        {"model": MODEL, "messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 6, "temperature": 0},
        progress_callback=on_progress,
    )
    assert not result.is_error, result.content
    jsonschema.validate(result.structured_content, tools["create-chat-completion"].output_schema)
    assert json.loads(result.content[0].text) == result.structured_content
    assert progress and progress == sorted(progress) and progress[-1] <= 6

    chat = await client.call_tool("chat", {"prompt": "Say hi.", "max_tokens": 6, "temperature": 0})
    assert not chat.is_error, chat.content
    jsonschema.validate(chat.structured_content, tools["chat"].output_schema)
    assert chat.structured_content["text"] == chat.structured_content["completion"]["choices"][0]["message"]["content"]

    models = await client.call_tool("list-models", {})
    assert [m["id"] for m in models.structured_content["data"]] == [MODEL]

    bad = await client.call_tool("create-chat-completion", {"model": MODEL, "messages": [{"role": "wizard"}]})
    assert bad.is_error
    assert "messages" in bad.content[0].text
    streamed = await client.call_tool("create-chat-completion", {"messages": [{"role": "user", "content": "hi"}],
                                                                 "stream": True})
    assert streamed.is_error and "(at stream)" in streamed.content[0].text  # refused, not ignored

    resources = (await client.list_resources()).resources
    uris = {str(r.uri) for r in resources}
    assert any(u.endswith("SKILL.md") for u in uris) and any(u.endswith(".yaml") for u in uris)


@pytest.mark.timeout(400)
def test_mcp_over_stdio():
    async def main():
        async with stdio_client() as client:
            await check_tools_and_calls(client)

    anyio.run(main)


def test_mcp_over_http(server):
    async def main():
        async with http_client(server) as client:
            await check_tools_and_calls(client)

    anyio.run(main)


def test_mcp_over_http_requires_the_key(server):
    response = httpx2.post(f"{server.base_url}/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "ping"})
    assert response.status_code == 401


def test_mcp_lone_surrogate_is_a_400_parse_error(server):
    headers = {"Authorization": f"Bearer {server.api_key}", "Accept": "application/json, text/event-stream"}
    url = f"{server.base_url}/mcp"
    init = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}
    session = httpx2.post(url, headers=headers, json=init).headers["mcp-session-id"]
    headers.update({"mcp-session-id": session, "mcp-protocol-version": "2025-06-18", "Content-Type": "application/json"})
    call = b'{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"chat","arguments":{"prompt":"\\ud800"}}}'
    response = httpx2.post(url, headers=headers, content=call, timeout=60)
    assert response.status_code == 400 and response.json()["error"]["code"] == -32700
    httpx2.delete(url, headers=headers)


def test_mcp_sessions_are_capped_per_client(server):
    limit = Settings().mcp_max_sessions_per_client  # the server runs with the default
    headers = {"Authorization": f"Bearer {server.api_key}", "Accept": "application/json, text/event-stream"}
    url = f"{server.base_url}/mcp"
    init = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}
    opened: list[str] = []
    try:
        for _ in range(limit + 1):
            response = httpx2.post(url, headers=headers, json=init)
            if response.status_code != 200:
                break
            opened.append(response.headers["mcp-session-id"])
        assert response.status_code == 429 and int(response.headers["retry-after"]) >= 1
        assert "Too many open MCP sessions" in response.json()["error"]["message"]
        httpx2.delete(url, headers={**headers, "mcp-session-id": opened.pop()})
        reopened = httpx2.post(url, headers=headers, json=init)
        assert reopened.status_code == 200
        opened.append(reopened.headers["mcp-session-id"])
    finally:
        for session in opened:
            httpx2.delete(url, headers={**headers, "mcp-session-id": session})


def test_mcp_over_stdio_answers_lines_it_cannot_parse():
    import subprocess
    import sys

    from tests.live_server import ROOT

    init = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}
    lines = [json.dumps(init), '{"jsonrpc":"2.0","method":"notifications/initialized"}', "not json",
             '{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"chat","arguments":{"prompt":"a\\ud800b"}}}',
             '{"jsonrpc":"2.0","id":3,"method":"ping"}']
    process = subprocess.Popen([sys.executable, "-m", "mcp_server", "mcp"], cwd=ROOT, text=True,
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        process.stdin.write("\n".join(lines) + "\n")
        process.stdin.flush()
        answers = []
        while not any(a.get("id") == 3 for a in answers):  # the pytest timeout bounds a hang
            answers.append(json.loads(process.stdout.readline()))
    finally:
        process.stdin.close()
        process.wait(60)
    parse_errors = [a for a in answers if a.get("error", {}).get("code") == -32700]
    assert len(parse_errors) == 2 and all(a["id"] is None for a in parse_errors)
