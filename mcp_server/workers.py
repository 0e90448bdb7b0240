"""Several worker processes on one listening socket (``chatcap serve --workers N``).

The parent checks that the port is free, binds ``N`` listening sockets to it with
``SO_REUSEPORT`` (:func:`mcp_server.cli._bind`), and forks ``N`` workers, each keeping one
socket; the kernel spreads new connections over the sockets by a hash of their addresses
(as gunicorn's ``--reuse-port`` and nginx's ``reuseport``). One shared socket, as uvicorn's
``--workers`` uses, gives a burst of connections to whichever worker wakes first (asyncio
accepts up to 100 at a time): 30 of 40 bursts of 12 connections to two idle asyncio
servers all reached one of them, 0 of 40 with ``SO_REUSEPORT``.
The parent closes its copies, so a worker that stops accepting takes its socket out of the
group. Each worker is a whole
``chatcap serve`` process (its own event loop, gateway and engine client) on the shared
gateway store and, with ``--redis-url``, shared rate limits. The parent serves nothing: it
waits for its workers and relays signals.

- SIGTERM or SIGINT to the parent: each worker gets SIGTERM and drains (stops accepting,
  finishes or cuts its requests at ``--shutdown-grace``); the parent exits once all have,
  with status 0 when every worker exited 0.
- A worker that exits while the server is not stopping (a crash, a failed start) stops the
  others and the parent exits with its status, as SGLang ends the server when one of its
  processes dies: a process manager (systemd, Kubernetes) restarts the whole server.
- A worker ignores the terminal's SIGINT (the parent relays it as SIGTERM) and receives
  SIGTERM when the parent dies (Linux ``PR_SET_PDEATHSIG``), so no worker outlives it.

Workers are forked before anything starts a thread (the model check and the bind only).
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import socket
import sys
from collections.abc import Callable, Sequence

__all__ = ["WORKER_HEADER", "run_workers", "worker_header"]

logger = logging.getLogger("chatcap")

WORKER_HEADER = b"x-chatcap-worker"
"""Response header naming the worker process (its pid) that answered, sent with ``--workers`` above 1."""

_PR_SET_PDEATHSIG = 1
_RELAYED = {signal.SIGTERM, signal.SIGINT}


def run_workers(sockets: Sequence[socket.socket], serve: Callable[[socket.socket], int]) -> int:
    """Fork one worker per listening socket, each running ``serve(its socket)`` (which returns
    its exit status), and wait for all of them; see the module docstring for signals and failures.

    Returns:
        0 when every worker exited 0, else the status of the first worker that failed
        (128 + the signal number for a worker killed by a signal).
    """
    children: dict[int, int] = {}  # pid -> worker index
    stopping = False

    def stop(signum: int, frame) -> None:
        nonlocal stopping
        stopping = True
        for pid in list(children):
            _signal(pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for index in range(len(sockets)):
        sys.stdout.flush()
        sys.stderr.flush()
        # Held until the child has reset its handlers: a signal then is not run by the parent's.
        signal.pthread_sigmask(signal.SIG_BLOCK, _RELAYED)
        pid = os.fork()
        if pid == 0:
            for other in sockets:
                if other is not sockets[index]:
                    other.close()
            os._exit(_worker(lambda: serve(sockets[index])))
        children[pid] = index
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _RELAYED)
        logger.info("worker %d started (pid %d)", index, pid)
    for sock in sockets:
        sock.close()
    status = 0
    while children:
        pid, wait_status = os.wait()  # a signal handler runs during the wait, which then resumes (PEP 475)
        index = children.pop(pid)
        code = os.waitstatus_to_exitcode(wait_status)
        code = 128 - code if code < 0 else code
        if code and not status:
            status = code
        if not stopping:
            logger.error("worker %d (pid %d) exited with status %d; stopping the others", index, pid, code)
            stop(signal.SIGTERM, None)
            status = status or 1  # a worker that ends on its own ends the server
    return status


def _worker(serve: Callable[[], int]) -> int:
    """Run in a forked worker: reset the signals, tie the worker to the parent, serve."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _RELAYED)
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):  # not Linux: the worker may outlive a killed parent
        pass
    try:
        return serve()
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        logger.exception("worker %d failed", os.getpid())
        return 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()


def _signal(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass


def worker_header(app):
    """Wrap an ASGI app so every HTTP response names the worker that sent it
    (:data:`WORKER_HEADER`: the process id)."""
    pid = str(os.getpid()).encode()

    async def wrapped(scope, receive, send):
        if scope["type"] != "http":
            return await app(scope, receive, send)

        async def named_send(message):
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), (WORKER_HEADER, pid)]}
            await send(message)

        await app(scope, receive, named_send)

    return wrapped
