"""The ``chatcap`` command: ``serve`` (REST + MCP over HTTP), ``mcp`` (MCP over stdio),
``generate`` (write or ``--check`` the generated artifacts), ``keys`` (API keys and credit).

Every flag can also come from an environment variable (``CHATCAP_<FLAG>``, e.g.
``CHATCAP_API_KEY``); the flag wins.
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import signal
import sys
from pathlib import Path

from mcp_server import __version__
from mcp_server.errors import ServiceError
from mcp_server.gateway.cli import add_keys_parser, run_keys
from mcp_server.settings import Settings

__all__ = ["main"]

logger = logging.getLogger("chatcap")

_SGLANG_FLAGS = ("--tp-size", "--dp-size", "--mem-fraction-static")
"""SGLang server flags offered by name (``--tp 8`` works too: argparse accepts prefixes)."""


def _env(name: str, default=None):
    return os.environ.get(f"CHATCAP_{name}", default)


def _price(text: str | None) -> tuple[float, float] | None:
    """``"0.5,1.5"`` -> ``(0.5, 1.5)`` (USD per million input, output tokens)."""
    if not text:
        return None
    try:
        prompt, completion = (float(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--price wants INPUT,OUTPUT in USD per million tokens, not {text!r}") from None
    return prompt, completion


def _add_runtime_flags(parser: argparse.ArgumentParser) -> None:
    defaults = Settings()
    parser.add_argument("--engine", default=_env("ENGINE", defaults.engine), help="inference runtime: embedded or sglang")
    parser.add_argument("--model-path", default=_env("MODEL_PATH"), help="local HF directory or GGUF file")
    parser.add_argument("--served-model-name", default=_env("SERVED_MODEL_NAME"), help="model id clients send")
    parser.add_argument("--api-key", default=_env("API_KEY"), help="require this Bearer key")
    parser.add_argument("--capability", default=_env("CAPABILITY"), help="Naftiko capability file")
    parser.add_argument("--dtype", default=_env("DTYPE", defaults.dtype), choices=["auto", "bfloat16", "float32"])
    parser.add_argument("--device", default=_env("DEVICE", defaults.device), help="embedded engine device: cpu, cuda")
    parser.add_argument("--context-length", type=int, default=_env("CONTEXT_LENGTH"))
    parser.add_argument(
        "--max-running-requests", type=int,
        default=int(_env("MAX_RUNNING_REQUESTS", defaults.max_running_requests)),
        help="most sequences decoded together",
    )
    parser.add_argument(
        "--enable-deterministic-inference", action="store_true",
        default=_env("ENABLE_DETERMINISTIC_INFERENCE", "") not in ("", "0", "false"),
        help="embedded engine: output never depends on the batch (decodes rows one by one)",
    )
    parser.add_argument("--log-level", default=_env("LOG_LEVEL", "info"))
    gateway = parser.add_argument_group("gateway (keys, credit, limits)")
    gateway.add_argument("--data-dir", default=_env("DATA_DIR"), help="API keys and usage ledger live here")
    gateway.add_argument(
        "--max-request-bytes", type=int,
        default=int(_env("MAX_REQUEST_BYTES", defaults.max_request_bytes)), help="largest request body (413)",
    )
    gateway.add_argument(
        "--shutdown-grace", type=float, default=float(_env("SHUTDOWN_GRACE", defaults.shutdown_grace)),
        help="seconds SIGTERM waits for requests in flight",
    )
    gateway.add_argument("--price", type=_price, default=_env("PRICE"), help="INPUT,OUTPUT USD per million tokens (overrides the catalog)")
    sglang = parser.add_argument_group("SGLang (--engine sglang)")
    sglang.add_argument("--sglang-url", default=_env("SGLANG_URL"), help="attach to this SGLang server or router")
    sglang.add_argument("--sglang-timeout", type=float, default=float(_env("SGLANG_TIMEOUT", defaults.sglang_timeout)))
    for flag in _SGLANG_FLAGS:
        sglang.add_argument(flag, default=_env(flag[2:].upper().replace("-", "_")), help="passed to SGLang")
    sglang.add_argument("--sglang-args", default=_env("SGLANG_ARGS", ""), help="more SGLang flags, one string")


def _sglang_args(args: argparse.Namespace) -> tuple[str, ...]:
    """SGLang pass-through flags: the named ones, then ``--sglang-args`` split like a shell."""
    named = [(flag, getattr(args, flag[2:].replace("-", "_"))) for flag in _SGLANG_FLAGS]
    return tuple(a for flag, value in named if value for a in (flag, str(value))) + tuple(
        shlex.split(args.sglang_args)
    )


def _settings(args: argparse.Namespace) -> Settings:
    return Settings(
        engine=args.engine,
        model_path=args.model_path,
        served_model_name=args.served_model_name,
        host=getattr(args, "host", Settings.host),
        port=int(getattr(args, "port", Settings.port)),
        api_key=args.api_key,
        capability_path=Path(args.capability) if args.capability else None,
        dtype=args.dtype,
        device=args.device,
        context_length=int(args.context_length) if args.context_length else None,
        max_running_requests=args.max_running_requests,
        enable_deterministic_inference=args.enable_deterministic_inference,
        sglang_url=args.sglang_url,
        sglang_args=_sglang_args(args),
        sglang_timeout=args.sglang_timeout,
        data_dir=Path(args.data_dir) if args.data_dir else None,
        max_request_bytes=args.max_request_bytes,
        shutdown_grace=args.shutdown_grace,
        price=args.price,
        allowed_hosts=_names(getattr(args, "allowed_hosts", "")),
        allowed_origins=_names(getattr(args, "allowed_origins", "")),
    )


def _names(text: str) -> tuple[str, ...]:
    """``"a, b"`` -> ``("a", "b")``."""
    return tuple(name.strip() for name in text.split(",") if name.strip())


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every sub-command."""
    parser = argparse.ArgumentParser(prog="chatcap", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"chatcap {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="serve REST /v1 and MCP at /mcp over HTTP")
    serve.add_argument("--host", default=_env("HOST", Settings.host))
    serve.add_argument("--port", type=int, default=int(_env("PORT", Settings.port)))
    serve.add_argument("--allowed-hosts", default=_env("ALLOWED_HOSTS", ""), help="more Host values /mcp accepts, comma-separated")
    serve.add_argument("--allowed-origins", default=_env("ALLOWED_ORIGINS", ""), help="Origin values /mcp accepts, comma-separated")
    _add_runtime_flags(serve)
    stdio = commands.add_parser("mcp", help="serve MCP over stdio (for desktop MCP clients)")
    _add_runtime_flags(stdio)
    generate = commands.add_parser("generate", help="write the generated tools and skill")
    generate.add_argument("--check", action="store_true", help="exit 1 if a committed artifact is stale")
    add_keys_parser(commands, _env("DATA_DIR"))
    return parser


def _serve(settings: Settings, log_level: str) -> None:
    import uvicorn

    from mcp_server.app import create_app

    # A SIGTERM while the app is being built (before uvicorn takes the signal over) means
    # "do not start": nothing is in flight yet, so the process exits 0 without serving.
    # Once serving, uvicorn drains on SIGTERM (stop accepting, wait for requests in flight
    # up to the timeout, then the lifespan's shutdown) and re-raises the signal it caught
    # into this same handler.
    stop_requested: list[int] = []
    signal.signal(signal.SIGTERM, lambda signum, frame: stop_requested.append(signum))
    app = create_app(settings)
    config = uvicorn.Config(
        app, host=settings.host, port=settings.port, log_level=log_level.lower(),
        timeout_graceful_shutdown=int(settings.shutdown_grace) + 1,
    )
    if stop_requested:
        logger.info("SIGTERM during start-up: not serving")
    else:
        uvicorn.Server(config).run()
    # The drain is over. Python restores the default SIGTERM action while it tears down,
    # so a repeated SIGTERM then would kill the process (exit -15) after a clean drain.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def _serve_stdio(settings: Settings) -> None:
    import anyio

    from mcp_server.app import run_mcp_stdio

    anyio.run(run_mcp_stdio, settings)


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
    args = build_parser().parse_args(argv)
    level = getattr(args, "log_level", "info").upper()
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        if args.command == "generate":
            return _generate(args.check)
        if args.command == "keys":
            return run_keys(args)
        settings = _settings(args)
        if args.command == "serve":
            _serve(settings, args.log_level)
        else:
            _serve_stdio(settings)
    except ServiceError as exc:
        print(f"chatcap: error: {exc.message}" + (f" (at {exc.param})" if exc.param else ""), file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
