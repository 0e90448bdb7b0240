"""Run SGLang's server as a managed child process: build its command, start, watch, stop.

Usage::

    command = launch_command(settings, port=30001)   # python -m sglang.launch_server ...
    launcher = Launcher(command, "http://127.0.0.1:30001")
    await launcher.start()      # returns once GET /health answers 200
    ...                         # a crashed child is restarted with backoff meanwhile
    await launcher.aclose()     # SIGTERM to its process group, SIGKILL after a grace period

The flags come from chatcap's flags and the model catalog (``--reasoning-parser``,
``--tool-call-parser`` only with ``--sglang-parsers sglang``: chatcap parses the raw text
otherwise, ``--context-length``, the model's own ``sglang_args``) plus ``--grammar-backend xgrammar``;
``settings.sglang_args`` come last, so they win (argparse keeps the last value). Flag names
are SGLang's server arguments (docs.sglang.ai "Server Arguments"). The launcher needs the
asyncio event loop (uvicorn's): its watcher and log pump are asyncio tasks that outlive
``start`` and end in ``aclose``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import importlib.util
import logging
import os
import signal
import socket
import subprocess
import sys
import time

import httpx

from mcp_server.catalog import CatalogEntry, default_entry, find_entry
from mcp_server.errors import EngineUnavailable
from mcp_server.settings import Settings

__all__ = ["INSTALL_HINT", "Launcher", "free_port", "launch_command", "require_sglang", "resolve_model"]

logger = logging.getLogger(__name__)
child_logger = logging.getLogger("sglang.server")

INSTALL_HINT = "pip install 'chatcap[sglang]'"


def require_sglang() -> None:
    """Fail at once when SGLang is not installed (launch mode needs it; attach mode does not).

    Raises:
        EngineUnavailable: ``sglang`` cannot be imported; the message says what to install.
    """
    if importlib.util.find_spec("sglang") is None:
        raise EngineUnavailable(
            f"--engine sglang needs SGLang installed to launch it: {INSTALL_HINT} "
            "(on a CUDA machine), or attach to a running server with --sglang-url URL."
        )


def free_port() -> int:
    """A free TCP port on the loopback interface, for the child to listen on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def resolve_model(settings: Settings) -> tuple[str, str, CatalogEntry | None]:
    """The model to launch: ``(model_path, served_model_name, catalog entry or None)``.

    ``settings.model_path`` defaults to the catalog's default model; the served name is
    the first ``served_model_name`` (SGLang serves one name), else the catalog id (the
    seed's spelling), else the model path.
    """
    entry = find_entry(settings.model_path) if settings.model_path else default_entry()
    model_path = settings.model_path or entry.model_path
    names = settings.served_model_name
    served = names[0] if names else (entry.id if entry else model_path)
    return model_path, served, entry


def launch_command(settings: Settings, port: int, python: str = sys.executable) -> list[str]:
    """Build the ``python -m sglang.launch_server`` command for the configured model.

    Args:
        settings: ``model_path`` (default: the catalog's default model),
            ``served_model_name``, ``context_length``, ``tool_call_parser``,
            ``reasoning_parser``, ``sglang_parsers`` and ``sglang_args`` are used.
        port: the loopback port the child listens on.
        python: the interpreter that has SGLang installed.

    Returns:
        The argv list; a model the catalog does not know gets only the parser flags given.
    """
    model_path, served, entry = resolve_model(settings)
    command = [
        python, "-m", "sglang.launch_server",
        "--model-path", model_path,
        "--served-model-name", served,
        "--host", "127.0.0.1",
        "--port", str(port),
        "--grammar-backend", "xgrammar",
        "--enable-cache-report",  # usage.prompt_tokens_details.cached_tokens, as the embedded engine reports it
    ]
    context_length = settings.context_length or (entry.context_length if entry else None)
    if context_length:
        command += ["--context-length", str(context_length)]
    if entry is None:
        logger.warning("model %s is not in the catalog: parser flags only as given", model_path)
    tool_call_parser = settings.tool_call_parser or (entry.tool_call_parser if entry else None)
    reasoning_parser = settings.reasoning_parser or (entry.reasoning_parser if entry else None)
    if tool_call_parser and settings.sglang_parsers == "sglang":
        command += ["--tool-call-parser", tool_call_parser]
    if reasoning_parser:  # kept with chatcap's parsers too: SGLang's grammar then starts after the think block
        command += ["--reasoning-parser", reasoning_parser]
    return command + list(entry.sglang_args if entry else ()) + list(settings.sglang_args)


class Launcher:
    """Keeps one SGLang server process alive until closed (on asyncio, as uvicorn runs).

    Args:
        command: the child's argv (see :func:`launch_command`).
        base_url: where the child answers, ``http://127.0.0.1:<port>``.
        health_timeout: seconds to wait for ``GET /health`` to answer 200 (model download
            and load included).
        max_restarts: restarts in a row after which the launcher gives up; a child that
            ran for ``stable_after`` seconds resets the count.
        backoff: seconds before the first restart; doubled each time, at most 60.
        log_lines: how many of the child's last log lines an error message quotes.
        stable_after: seconds of running after which a crash counts as the first in a row.

    Attributes:
        status: ``stopped``, ``starting``, ``running``, ``restarting`` or ``failed``.
    """

    def __init__(
        self,
        command: list[str],
        base_url: str,
        *,
        health_timeout: float = 1800.0,
        max_restarts: int = 5,
        backoff: float = 2.0,
        log_lines: int = 30,
        stable_after: float = 300.0,
    ):
        self.command = command
        self.base_url = base_url
        self.health_timeout = health_timeout
        self.max_restarts = max_restarts
        self.backoff = backoff
        self.stable_after = stable_after
        self.status = "stopped"
        self._log: collections.deque[str] = collections.deque(maxlen=log_lines)
        self._process: asyncio.subprocess.Process | None = None
        self._watcher: asyncio.Task | None = None
        self._pumps: set[asyncio.Task] = set()

    @property
    def pid(self) -> int | None:
        """The process id of the running child, or None when no child runs."""
        process = self._process
        return process.pid if process is not None and process.returncode is None else None

    def last_log(self) -> str:
        """The child's last log lines, joined by newlines."""
        return "\n".join(self._log)

    async def start(self) -> None:
        """Start the child and wait until it is healthy; then watch it in the background.

        Raises:
            EngineUnavailable: the child exited or was not healthy within
                ``health_timeout``; the message quotes its last log lines.
        """
        try:
            await self._launch()
        except BaseException:
            await self.aclose()
            raise
        self._watcher = asyncio.get_running_loop().create_task(self._watch())

    async def aclose(self) -> None:
        """Stop watching and stop the child (SIGTERM to its process group, SIGKILL after 30 s)."""
        watcher, self._watcher = self._watcher, None
        if watcher is not None:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
        await self._stop()
        await asyncio.gather(*self._pumps, return_exceptions=True)  # they end at the child's EOF
        self.status = "stopped"

    async def _launch(self) -> None:
        self.status = "starting" if self.status == "stopped" else "restarting"
        logger.info("starting SGLang: %s", " ".join(self.command))
        self._process = await asyncio.create_subprocess_exec(
            *self.command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            start_new_session=True, limit=1 << 20,
        )
        pump = asyncio.get_running_loop().create_task(self._pump_log(self._process))
        self._pumps.add(pump)
        pump.add_done_callback(self._pumps.discard)
        await self._wait_healthy(self._process)
        self.status = "running"
        logger.info("SGLang is ready at %s", self.base_url)

    async def _wait_healthy(self, process: asyncio.subprocess.Process) -> None:
        deadline = time.monotonic() + self.health_timeout
        async with httpx.AsyncClient(timeout=5.0) as client:
            while process.returncode is None and time.monotonic() < deadline:
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get(f"{self.base_url}/health")).status_code == 200:
                        return
                await asyncio.sleep(0.5)
        if process.returncode is None:
            raise EngineUnavailable(
                f"SGLang was not ready after {self.health_timeout:.0f} s "
                f"(GET {self.base_url}/health). Its last log lines:\n{self.last_log()}"
            )
        await asyncio.sleep(0.2)  # let the log pump read the child's last words
        raise EngineUnavailable(
            f"SGLang exited with status {process.returncode} before it was ready. "
            f"Its last log lines:\n{self.last_log()}"
        )

    async def _pump_log(self, process: asyncio.subprocess.Process) -> None:
        assert process.stdout is not None
        async for line in process.stdout:
            text = line.decode(errors="replace").rstrip()
            self._log.append(text)
            child_logger.info("%s", text)

    async def _watch(self) -> None:
        """Restart the child with exponential backoff whenever it exits."""
        failures = 0
        while True:
            if self._process is not None:
                started = time.monotonic()
                code = await self._process.wait()
                logger.error("SGLang exited with status %s", code)
                if time.monotonic() - started > self.stable_after:
                    failures = 0
            failures += 1
            if failures > self.max_restarts:
                self.status = "failed"
                logger.error("SGLang keeps exiting; gave up after %d restarts", self.max_restarts)
                return
            self.status = "restarting"
            delay = min(self.backoff * 2 ** (failures - 1), 60.0)
            logger.warning("restarting SGLang in %.1f s (restart %d of %d)", delay, failures, self.max_restarts)
            await asyncio.sleep(delay)
            try:
                await self._launch()
            except EngineUnavailable as exc:
                logger.error("%s", exc.message)
                await self._stop()

    async def _stop(self) -> None:
        process, self._process = self._process, None
        if process is None or process.returncode is not None:
            return
        for sig, grace in ((signal.SIGTERM, 30.0), (signal.SIGKILL, 5.0)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, sig)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(process.wait(), grace)
                return
