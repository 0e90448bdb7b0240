"""The ``chatcap`` command: ``serve`` (REST + MCP over HTTP), ``mcp`` (MCP over stdio),
``generate`` (write or ``--check`` the generated artifacts), ``keys`` (API keys and credit).

Every flag can also come from an environment variable (``CHATCAP_<FLAG>``, e.g.
``CHATCAP_API_KEY``); the flag wins. ``serve`` checks ``--model-path`` and binds its port
before it loads anything, so a wrong path or a busy port ends in a second with one line
and exit status 2.
"""

from __future__ import annotations

import argparse
import errno
import logging
import math
import os
import signal
import socket
import sys
from pathlib import Path
from typing import Any

from dataclasses import replace

from mcp_server import __version__
from mcp_server.deployment import Deployment, from_model_paths, load_deployment
from mcp_server.errors import InvalidRequest, ServiceError
from mcp_server.gateway.cli import add_command, add_keys_parser, run_keys
from mcp_server.settings import ENV_PREFIX, Flag, Settings, flags

__all__ = ["main"]

logger = logging.getLogger("chatcap")

DESCRIPTION = (
    "chatcap: an OpenAI-compatible chat-completions server (REST /v1, MCP and an Agent\n"
    "Skill, generated from one capability) on an embedded CPU engine or SGLang.\n"
    f"Every flag can also be set by an environment variable, {ENV_PREFIX}<FLAG>\n"
    f"(e.g. {ENV_PREFIX}PORT=9000); the flag wins."
)
EXAMPLES = {
    "serve": "serve --model-path ./gemma-3-270m.gguf --chat-template gemma \\\n"
    "      --served-model-name gemma --host 0.0.0.0 --port 8080",
    "mcp": "mcp --model-path ./model.gguf   (a desktop MCP client starts this)",
    "generate": "generate --check",
}
"""One example per command, shown at the end of its ``--help``."""

_SGLANG_FLAGS = ("--tp-size", "--dp-size", "--mem-fraction-static")
"""SGLang server flags offered by name (``--tp 8`` works too: argparse accepts prefixes)."""


_GROUPS = {"runtime": None, "gateway": "gateway (keys, credit, limits)", "sglang": "SGLang (--engine sglang)"}


def _add_settings_flags(parser: argparse.ArgumentParser, serve: bool) -> None:
    """Add one flag per setting (:func:`mcp_server.settings.flags`), grouped as in ``--help``,
    each help text ending with its default and its environment variable."""
    groups = {name: parser.add_argument_group(title) if title else parser for name, title in _GROUPS.items()}
    for name, option, flag, default in flags(serve):
        group = groups[flag.group]
        env = f"env {ENV_PREFIX}{name.upper()}"
        if "default" in flag.help:  # the help text says it in words
            text = f"{flag.help} ({env})"
        else:
            text = f"{flag.help} (default: {_shown(default, flag)}; {env})"
        text = text.replace("%", "%%")  # argparse formats help with %
        if flag.switch:
            group.add_argument(option, dest=name, action="store_true", default=default, help=text)
        elif flag.repeat:  # the values join in _settings
            group.add_argument(option, dest=name, action="append", default=None, help=text, type=_argparse_type(flag))
        else:
            group.add_argument(
                option, dest=name, default=default, choices=flag.choices, help=text, type=_argparse_type(flag)
            )
    for option in _SGLANG_FLAGS:
        env = ENV_PREFIX + option[2:].upper().replace("-", "_")
        groups["sglang"].add_argument(
            option, default=os.environ.get(env), help=f"passed to SGLang (default: SGLang's; env {env})"
        )


def _shown(default: Any, flag: Flag) -> str:
    """A default as ``--help`` shows it: ``on``/``off`` for a switch, ``none`` for no value."""
    if flag.switch:
        return "on" if default else "off"
    if default is None or default == ():
        return "none"
    return ",".join(map(str, default)) if isinstance(default, tuple) else str(default)


def _argparse_type(flag: Flag):
    def convert(text: str):
        try:
            return flag.value(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return convert


def _deployment(args: argparse.Namespace) -> Deployment:
    """The deployment the parsed flags describe: a ``--config`` file, repeated ``--model-path``
    flags, or the one model of the other flags. The named SGLang flags join ``sglang_args``.

    Raises:
        InvalidRequest: the deployment file is invalid, or ``--config`` and ``--model-path`` are
            both given (param ``config``).
    """
    values, given = {}, set()
    for name, _, flag, default in flags(serve=hasattr(args, "port")):
        values[name] = getattr(args, name)
        if flag.repeat:  # a list of parsed tuples, or None when the flag was not given
            values[name] = tuple(v for parsed in values[name] for v in parsed) if values[name] else default
        if values[name] is not None and values[name] != default:
            given.add(name)
    model_paths = values["model_path"]  # a tuple (the flag's, or the variable's), or None
    model_paths = list(model_paths) if isinstance(model_paths, tuple) else [model_paths] if model_paths else []
    values["model_path"] = model_paths[0] if model_paths else None
    named = [(flag, getattr(args, flag[2:].replace("-", "_"))) for flag in _SGLANG_FLAGS]
    values["sglang_args"] = tuple(a for flag, value in named if value for a in (flag, str(value))) + tuple(
        values["sglang_args"]
    )
    settings = Settings(**values)
    if settings.config is not None:
        if "model_path" in given:
            raise InvalidRequest("Give the models in the deployment file or by --model-path, not both.", param="config")
        deployment = load_deployment(settings.config, settings, frozenset(given))
    else:
        deployment = from_model_paths(model_paths, settings)
    server = deployment.server
    api_key = _api_key(server.api_key, server.api_key_file)
    return Deployment(
        replace(server, api_key=api_key), tuple(replace(model, api_key=api_key) for model in deployment.models)
    )


def _settings(args: argparse.Namespace) -> Settings:
    """The server-wide settings the parsed flags describe (with the first model's per-model ones)."""
    return _deployment(args).server


def _api_key(key: str | None, key_file: Path | None) -> str | None:
    """``--api-key``, or the text of ``--api-key-file``, whitespace stripped (a file keeps the key out of ``ps``).

    Raises:
        SystemExit: both are given, or the file cannot be read or is empty.
    """
    if key_file is None:
        return key
    if key:
        raise SystemExit("chatcap: give --api-key or --api-key-file, not both")
    try:
        key = key_file.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise SystemExit(f"chatcap: cannot read --api-key-file: {exc}") from None
    if not key:
        raise SystemExit(f"chatcap: --api-key-file {key_file} is empty")
    return key


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every sub-command.

    Raises:
        ValueError: a ``CHATCAP_*`` environment variable does not parse.
    """
    parser = argparse.ArgumentParser(
        prog="chatcap", description=DESCRIPTION,
        epilog="example:\n  chatcap serve --model-path ./gemma-3-270m.gguf --chat-template gemma --port 8080",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    parser.add_argument("--version", action="version", version=f"chatcap {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = add_command(commands, "serve", "serve REST /v1 and MCP at /mcp over HTTP", EXAMPLES["serve"])
    _add_settings_flags(serve, serve=True)
    stdio = add_command(commands, "mcp", "serve MCP over stdio (for desktop MCP clients)", EXAMPLES["mcp"])
    _add_settings_flags(stdio, serve=False)
    generate = add_command(commands, "generate", "write the generated tools and skill", EXAMPLES["generate"])
    generate.add_argument(
        "--check", action="store_true", help="exit 1 if a committed artifact is stale (default: write them)"
    )
    add_keys_parser(commands, os.environ.get(f"{ENV_PREFIX}DATA_DIR"), os.environ.get(f"{ENV_PREFIX}DATABASE_URL"))
    return parser


def _check_models(deployment: Deployment) -> None:
    """Check each model's ``--model-path`` and ``--chat-template`` of the embedded engine before anything heavy loads.

    Raises:
        ModelPathError: one line naming the path and what to do.
        InvalidRequest: ``--chat-template`` with another engine.
    """
    for settings in deployment.models:
        if settings.engine != "embedded":
            if settings.chat_template:
                raise InvalidRequest(
                    "--chat-template applies to the embedded engine; give SGLang its own in --sglang-args"
                )
            continue
        from mcp_server.engines.embedded.model_check import check_model_path

        check_model_path(settings.model_path, settings.chat_template)


def _bind(host: str, port: int, reuse_port: bool = False) -> socket.socket:
    """Bind and listen on ``host:port`` before the model loads, so a busy port fails first;
    ``reuse_port``: with ``SO_REUSEPORT``, one of the ``--workers`` sockets.

    Raises:
        InvalidRequest: the address cannot be bound (in use, not local, no permission).
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        in_use = exc.errno == errno.EADDRINUSE
        hint = "stop the other server or choose another --port" if in_use else "check --host and --port"
        raise InvalidRequest(f"cannot listen on {host}:{port} ({exc.strerror or exc}); {hint}") from None
    return sock


def _check_workers(deployment: Deployment) -> None:
    """``--workers`` above 1 needs every model attached to a running SGLang server or router
    (``--sglang-url``): the workers are front-end processes, as vLLM's ``--api-server-count``;
    an embedded model would load once per worker, and a launched SGLang server start once per worker.

    Raises:
        InvalidRequest: (param ``workers``) a model is embedded or launches SGLang.
    """
    workers = deployment.server.workers
    if workers == 1:
        return
    for model in deployment.models:
        if model.engine != "sglang" or not model.sglang_url:
            name = model.served_model_name[0] if model.served_model_name else model.model_path or "the bundled model"
            raise InvalidRequest(
                f"--workers {workers} needs every model served by a running SGLang server or router (--engine sglang "
                f"--sglang-url URL); {name} runs on the {model.engine} engine"
                + ("" if model.engine != "sglang" else " launched by chatcap")
                + ", which each worker would load again. Run one worker per model copy, or put replicas behind the "
                "SGLang router (README: Replicas).",
                param="workers",
            )


def _serve(deployment: Deployment) -> None:
    """Serve ``deployment``: in this process, or in ``--workers`` forked processes on one socket.

    Raises:
        ServiceError: a bad model path, flag combination or address; the engine failed to start.
        SystemExit: a worker failed (its status), or the engine failed with a bug (3).
    """
    _check_models(deployment)  # first: a wrong path ends before the heavy imports below
    _check_workers(deployment)
    settings = deployment.server
    sock = _bind(settings.host, settings.port)  # without SO_REUSEPORT: fails where anything listens
    if settings.workers == 1:
        _serve_on(deployment, sock)
        return
    from mcp_server.workers import run_workers

    port = sock.getsockname()[1]
    sock.close()
    sockets = [_bind(settings.host, port, reuse_port=True) for _ in range(settings.workers)]
    status = run_workers(sockets, lambda own: _serve_worker(deployment, own))
    if status:
        raise SystemExit(status)


def _serve_worker(deployment: Deployment, sock: socket.socket) -> int:
    """One worker of ``--workers``: serve on the inherited socket; the exit status."""
    try:
        _serve_on(deployment, sock)
    except ServiceError as exc:
        _report(exc)
        return 2
    return 0


def _serve_on(deployment: Deployment, sock: socket.socket) -> None:
    settings = deployment.server
    import uvicorn

    from mcp_server.app import create_app
    from mcp_server.surfaces.read_timeout import read_timeouts

    class _DrainingServer(uvicorn.Server):
        """uvicorn's server; tells the gateway when the drain starts (see below)."""

        def __init__(self, config: uvicorn.Config, begin_shutdown, grace: float):
            super().__init__(config)
            self._begin_shutdown, self._grace = begin_shutdown, grace

        def handle_exit(self, sig: int, frame) -> None:
            if sig == signal.SIGINT and settings.workers > 1:
                return  # the terminal's Ctrl-C reaches the workers too; the parent relays it as SIGTERM
            super().handle_exit(sig, frame)

        async def shutdown(self, sockets=None) -> None:
            self._begin_shutdown(self._grace)
            await super().shutdown(sockets)

    # A SIGTERM while the app is being built (before uvicorn takes the signal over) means
    # "do not start": nothing is in flight yet, so the process exits 0 without serving.
    # Once serving, uvicorn drains on SIGTERM (stop accepting, wait for requests in flight
    # up to the timeout, then the lifespan's shutdown) and re-raises the signal it caught
    # into this same handler. The gateway cuts the generations still running at the grace
    # (our error shape, billed for what was delivered); uvicorn's own cut (a bare 500 or a
    # dropped stream) comes 2 s later, for those answers to go out.
    stop_requested: list[int] = []
    signal.signal(signal.SIGTERM, lambda signum, frame: stop_requested.append(signum))
    app = create_app(settings, models=deployment.models)
    served = app
    if settings.workers > 1:
        from mcp_server.workers import worker_header

        served = worker_header(app)
    config = uvicorn.Config(
        served, host=settings.host, port=settings.port, log_level=settings.log_level.lower(),
        timeout_graceful_shutdown=math.ceil(settings.shutdown_grace) + 2,
        **read_timeouts(settings.read_timeout),
    )
    server = _DrainingServer(config, app.state.begin_shutdown, settings.shutdown_grace)
    app.state.load.on_failure = lambda: setattr(server, "should_exit", True)
    if stop_requested:
        logger.info("SIGTERM during start-up: not serving")
    else:
        server.run(sockets=[sock])
    # The drain is over. Python restores the default SIGTERM action while it tears down,
    # so a repeated SIGTERM then would kill the process (exit -15) after a clean drain.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    error = app.state.load.error
    if isinstance(error, ServiceError):
        raise error
    if error is not None:
        raise SystemExit(3)  # logged with its traceback where it happened


def _serve_stdio(deployment: Deployment) -> None:
    _check_models(deployment)
    import anyio

    from mcp_server.app import run_mcp_stdio

    anyio.run(run_mcp_stdio, deployment.server, deployment.models)


def _generate(check: bool) -> int:
    from mcp_server.capability.schemas import PROJECT_ROOT
    from mcp_server.generate.tools import generate

    stale = generate(PROJECT_ROOT, check=check)
    if check and stale:
        print("stale generated artifacts (run `chatcap generate`):", *stale, sep="\n  ", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``chatcap`` console script; returns the exit status."""
    try:
        parser = build_parser()
    except ValueError as exc:  # a CHATCAP_* variable that does not parse
        print(f"chatcap: error: {exc}", file=sys.stderr)
        return 2
    args = parser.parse_args(argv)
    level = getattr(args, "log_level", "info").upper()
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        if args.command == "generate":
            return _generate(args.check)
        if args.command == "keys":
            return run_keys(args)
        deployment = _deployment(args)
        if args.command == "serve":
            _serve(deployment)
        else:
            _serve_stdio(deployment)
    except ServiceError as exc:
        _report(exc)
        return 2
    return 0


def _report(exc: ServiceError) -> None:
    print(f"chatcap: error: {exc.message}" + (f" (at {exc.param})" if exc.param else ""), file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
