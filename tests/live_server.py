"""A real ``chatcap serve`` process on a loopback port, for end-to-end tests."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class LiveServer:
    """A running server: ``base_url`` is ``http://127.0.0.1:<port>``."""

    process: subprocess.Popen
    base_url: str
    api_key: str | None
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        stop_process(self.process)


def start_server(log_dir: Path, *args: str, api_key: str | None = None, timeout: float = 240) -> LiveServer:
    """Start ``chatcap serve`` and wait until ``/health`` answers.

    Raises:
        RuntimeError: the server exited or did not become healthy in time (with its log).
    """
    port = free_port()
    log_path = log_dir / f"server-{port}.log"
    command = [sys.executable, "-m", "mcp_server", "serve", "--host", "127.0.0.1", "--port", str(port), *args]
    if api_key:
        command += ["--api-key", api_key]
    env = {k: v for k, v in os.environ.items() if k != "CHATCAP_API_KEY"}
    base_url = f"http://127.0.0.1:{port}"
    process = spawn_healthy(command, log_path, f"{base_url}/health", timeout, env)
    return LiveServer(process, base_url, api_key, log_path)


def spawn_healthy(
    command: list[str], log_path: Path, health_url: str, timeout: float, env: dict[str, str] | None = None
) -> subprocess.Popen:
    """Start ``command`` (from the project root, output to ``log_path``) and wait until ``health_url`` answers 200.

    Raises:
        RuntimeError: as :func:`wait_until_healthy`; the process is stopped first.
    """
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        wait_until_healthy(process, health_url, log_path, timeout)
    except RuntimeError:
        stop_process(process)
        raise
    return process


def stop_process(process: subprocess.Popen) -> None:
    """Terminate ``process``; kill it if it has not exited after 30 s."""
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()


def wait_until_healthy(process: subprocess.Popen, health_url: str, log_path: Path, timeout: float) -> None:
    """Poll ``health_url`` until it answers 200.

    Raises:
        RuntimeError: the process exited, or the URL did not answer 200 within ``timeout``
            seconds; the message holds the end of the process's log.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args[0]} exited with {process.returncode}:\n{_tail(log_path)}")
        try:
            if httpx.get(health_url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{health_url} not healthy after {timeout} s:\n{_tail(log_path)}")


def wait_for_workers(live: LiveServer, count: int, timeout: float = 120) -> None:
    """Wait until ``count`` workers of a ``--workers`` server answer ``/health`` with 200
    (each loads on its own; ``X-Chatcap-Worker`` names the one that answered), asking on a new
    connection each time, so the kernel picks the worker.

    Raises:
        RuntimeError: fewer than ``count`` were ready within ``timeout`` seconds.
    """
    ready: set[str] = set()
    deadline = time.monotonic() + timeout
    while len(ready) < count:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{len(ready)} of {count} workers ready after {timeout} s:\n{_tail(live.log_path)}")
        with httpx.Client(timeout=10) as http:
            answer = http.get(f"{live.base_url}/health")
        if answer.status_code == 200:
            ready.add(answer.headers["x-chatcap-worker"])


def _tail(log_path: Path) -> str:
    return log_path.read_text(errors="replace")[-6000:]
