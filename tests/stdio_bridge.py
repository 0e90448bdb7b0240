"""A streamable-HTTP front for ``chatcap mcp`` (stdio), so that URL-only MCP tools can test stdio.

Each HTTP session (``initialize`` without ``Mcp-Session-Id``) starts its own ``chatcap mcp``
process (and ends the previous one: each holds a loaded model); a POSTed request is written to its stdin as one JSON line, and what the process
writes back until the response with that id (notifications included) is answered as a
server-sent-event stream. Client notifications and responses get 202. It relays bytes and
decides nothing: every answer comes from the stdio server. No Host/Origin checks: those
belong to the HTTP transport, which this is not.
"""

from __future__ import annotations

import asyncio
import json
import sys
import threading
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from tests.live_server import ROOT, free_port


@dataclass
class _Session:
    process: asyncio.subprocess.Process
    waiting: dict[object, asyncio.Queue] = field(default_factory=dict)
    reader: asyncio.Task | None = None

    async def read(self) -> None:
        """Route each line the server writes: a response to its request, anything else to every open stream."""
        assert self.process.stdout is not None
        while line := await self.process.stdout.readline():
            message = json.loads(line)
            is_response = "id" in message and ("result" in message or "error" in message)
            queues = [self.waiting[message["id"]]] if is_response and message["id"] in self.waiting else list(
                self.waiting.values())
            for queue in queues:
                await queue.put(message)

    async def send(self, message: dict) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(message).encode() + b"\n")
        await self.process.stdin.drain()


class StdioBridge:
    """Run the bridge on a loopback port in a background thread; ``url`` is its MCP endpoint."""

    def __init__(self, *args: str):
        self.args = args
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/mcp"
        self.sessions: dict[str, _Session] = {}
        app = Starlette(routes=[Route("/mcp", self.endpoint, methods=["POST", "GET", "DELETE"])])
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> StdioBridge:
        self.thread.start()
        while not self.server.started:
            threading.Event().wait(0.05)
        return self

    def __exit__(self, *exc) -> None:
        for session in self.sessions.values():
            if session.process.returncode is None:
                session.process.terminate()
        self.server.should_exit = True
        self.thread.join(timeout=60)

    async def endpoint(self, request: Request) -> Response:
        session_id = request.headers.get("mcp-session-id")
        if request.method == "GET":
            return Response(status_code=405)  # no standalone stream: allowed by the transport
        if request.method == "DELETE":
            session = self.sessions.pop(session_id or "", None)
            if session is not None:
                session.process.terminate()
            return Response(status_code=200 if session else 404)
        message = json.loads(await request.body())
        if message.get("method") == "initialize" and session_id is None:
            for old in self.sessions.values():  # one session at a time: each holds a loaded model
                if old.process.returncode is None:
                    old.process.terminate()
            session_id = uuid.uuid4().hex
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "mcp_server", "mcp", *self.args, cwd=ROOT,
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            )
            self.sessions[session_id] = session = _Session(process)
            session.reader = asyncio.create_task(session.read())
        elif (session := self.sessions.get(session_id or "")) is None:
            return Response("unknown session", status_code=404)
        headers = {"mcp-session-id": session_id}
        if "method" not in message or "id" not in message:  # a notification or a response
            await session.send(message)
            return Response(status_code=202, headers=headers)
        queue: asyncio.Queue = asyncio.Queue()
        session.waiting[message["id"]] = queue
        await session.send(message)

        async def events() -> AsyncIterator[bytes]:
            try:
                while True:
                    answer = await queue.get()
                    yield f"event: message\ndata: {json.dumps(answer)}\n\n".encode()
                    if answer.get("id") == message["id"] and ("result" in answer or "error" in answer):
                        return
            finally:
                session.waiting.pop(message["id"], None)

        return StreamingResponse(events(), media_type="text/event-stream", headers=headers)
