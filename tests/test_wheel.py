"""The built wheel works outside the source tree: ``chatcap serve``, ``chatcap mcp``, ``generate --check``.

The wheel is built from this checkout (``pip wheel --no-deps --no-build-isolation``) and
installed into a fresh virtual environment that reuses the running environment's
dependencies through a ``.pth`` file; every command runs from a folder outside the tree.
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import time
from dataclasses import dataclass
from pathlib import Path

import anyio
import httpx
import pytest
from mcp import Client, StdioServerParameters

from tests.live_server import ROOT, free_port

MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"


@dataclass(frozen=True)
class Installed:
    """A fresh environment holding the wheel: its ``python``, its ``chatcap`` and a folder outside the tree."""

    python: Path
    chatcap: Path
    elsewhere: Path

    def run(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(self.chatcap), *args], cwd=self.elsewhere, env=ENV, capture_output=True,
                              text=True, timeout=300)


ENV = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "CHATCAP_API_KEY")}


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Installed:
    tmp = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp / "dist"),
         str(ROOT)], check=True, cwd=tmp, timeout=300,
    )
    wheel = next((tmp / "dist").glob("chatcap-*.whl"))
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    site = Path(subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True,
    ).stdout.strip())
    # The dependencies (and pip) come from the running environment, its own chatcap does not:
    # a path line in a .pth file adds that folder but runs none of the .pth files inside it.
    (site / "zz-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--target", str(site), str(wheel)],
        check=True, timeout=300, cwd=tmp, env=ENV,
    )
    elsewhere = tmp / "elsewhere"
    elsewhere.mkdir()
    return Installed(python, site / "bin" / "chatcap", elsewhere)


def test_wheel_carries_the_data_and_runs_from_it(installed):
    where = subprocess.run(
        [str(installed.python), "-c", "import mcp_server.capability.schemas as s; print(s.PROJECT_ROOT)"],
        cwd=installed.elsewhere, env=ENV, capture_output=True, text=True, check=True,
    ).stdout.strip()
    assert Path(where).is_relative_to(installed.python.parent.parent) and Path(where).name == "data", where
    check = installed.run("generate", "--check")
    assert check.returncode == 0, check.stderr
    templates = subprocess.run(
        [str(installed.python), "-c", "from mcp_server.engines.embedded.chat_templates import load_chat_template as t; "
         "print(t('gemma'))"], cwd=installed.elsewhere, env=ENV, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert "<start_of_turn>" in templates


@pytest.mark.timeout(600)
def test_wheel_serves_rest_and_mcp_over_stdio(installed):
    port = free_port()
    log_path = installed.elsewhere / "serve.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen([str(installed.chatcap), "serve", "--port", str(port)], cwd=installed.elsewhere,
                                   stdout=log, stderr=subprocess.STDOUT, env=ENV)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            assert process.poll() is None, log_path.read_text()
            try:
                if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)  # a 503 "loading" too
        completion = httpx.post(f"{base}/v1/chat/completions", timeout=300, json={
            "model": MODEL, "messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 4, "temperature": 0})
        assert completion.status_code == 200, completion.text
        assert completion.json()["choices"][0]["message"]["content"]
        assert httpx.get(f"{base}/skills/chat-completions", timeout=30).status_code == 200
    finally:
        process.terminate()
        process.wait(timeout=60)

    async def stdio():
        params = StdioServerParameters(command=str(installed.chatcap), args=["mcp"], cwd=str(installed.elsewhere),
                                       env=ENV)
        async with Client(params, read_timeout_seconds=300) as client:
            tools = {t.name for t in (await client.list_tools()).tools}
            resources = {str(r.uri) for r in (await client.list_resources()).resources}
        return tools, resources

    tools, resources = anyio.run(stdio)
    assert tools == {"create-chat-completion", "list-models", "chat"}
    assert "chatcap://skills/chat-completions/SKILL.md" in resources
