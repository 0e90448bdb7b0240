"""The llama.cpp serving path imports no torch (and no xgrammar, whose package imports torch), and
without a data directory or ``--redis-url`` no database or Redis client (SQLAlchemy, redis-py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

SERVE_ONE = r"""
import json, sys, time
from starlette.testclient import TestClient
from mcp_server.app import create_app
from mcp_server.settings import Settings

schema = {"type": "object", "properties": {"color": {"enum": ["red", "green"]}}, "required": ["color"]}
weather = {"type": "function", "function": {"name": "get_weather",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
with TestClient(create_app(Settings(runner="llamacpp")), base_url="http://127.0.0.1:8000") as client:
    deadline = time.monotonic() + 240  # the model loads in the background; /health says when it is ready
    while client.get("/health").status_code != 200 and time.monotonic() < deadline:
        time.sleep(0.2)
    answers = [
        client.post("/v1/chat/completions", json={
            "messages": [{"role": "user", "content": "A color?"}], "max_tokens": 16, "temperature": 0.7, "seed": 1,
            "logprobs": True, "top_logprobs": 2, "presence_penalty": 0.5,
            "response_format": {"type": "json_schema", "json_schema": {"name": "c", "schema": schema}}}),
        client.post("/v1/chat/completions", json={
            "messages": [{"role": "user", "content": "Weather in Paris?"}], "max_tokens": 40, "temperature": 0,
            "tools": [weather], "tool_choice": {"type": "function", "function": {"name": "get_weather"}}}),
    ]
print(json.dumps({"status": [a.status_code for a in answers], "bodies": [a.json() for a in answers],
                  "unloaded": [m for m in ("torch", "xgrammar", "sqlalchemy", "redis") if m not in sys.modules]}))
"""


def test_the_llamacpp_serving_path_imports_no_torch_and_no_database_client():
    done = subprocess.run(
        [sys.executable, "-c", SERVE_ONE], cwd=ROOT, capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["status"] == [200, 200], result["bodies"]
    structured, called = result["bodies"]
    assert json.loads(structured["choices"][0]["message"]["content"])["color"] in ("red", "green")
    assert structured["choices"][0]["logprobs"]["content"]
    call = called["choices"][0]["message"]["tool_calls"][0]["function"]
    assert call["name"] == "get_weather" and isinstance(json.loads(call["arguments"])["city"], str)
    assert result["unloaded"] == ["torch", "xgrammar", "sqlalchemy", "redis"]
