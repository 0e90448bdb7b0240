"""What the SGLang worker endpoints ask of an embedded engine: its load, a cache flush, and
what the model's own files say about it (``/get_load``, ``/flush_cache``, ``/model_info``)."""

from __future__ import annotations

import functools
import json
import logging
from pathlib import Path
from typing import Any

import anyio

from mcp_server.engines.base import EngineLoad, ModelInfo
from mcp_server.engines.embedded.gguf_header import read_header
from mcp_server.engines.embedded.model_files import default_gguf_path

__all__ = ["WorkerFacts", "model_info"]

logger = logging.getLogger(__name__)


class WorkerFacts:
    """The worker facts of :class:`~mcp_server.engines.embedded.engine.EmbeddedEngine` (a mixin:
    it reads the engine's ``_scheduler`` and ``_model_path``)."""

    _scheduler: Any
    _model_path: str | None

    def load(self) -> EngineLoad:
        """The scheduler's load (:meth:`.scheduler.Scheduler.load`); nothing before ``start``."""
        return self._scheduler.load() if self._scheduler else EngineLoad()

    async def flush_cache(self) -> bool:
        """Drop the cached prompt prefixes while nothing runs (:meth:`.scheduler.Scheduler.flush_cache`)."""
        scheduler = self._scheduler
        return scheduler is not None and await anyio.to_thread.run_sync(scheduler.flush_cache)

    def model_info(self) -> ModelInfo:
        """Where the weights come from and the architecture they declare (:func:`model_info`)."""
        return model_info(self._model_path)


@functools.cache
def model_info(model_path: str | None) -> ModelInfo:
    """Where a GGUF file's or Hugging Face directory's weights come from, and its architecture.

    Args:
        model_path: the file or directory; None for the bundled GGUF.

    Returns:
        For a GGUF file its ``general.architecture`` (``llama``) as ``model_type`` and no
        model classes (read from the header only: :mod:`.gguf_header`); for a directory its
        ``config.json``'s ``model_type`` and ``architectures`` (``LlamaForCausalLM``). Files
        that cannot be read give neither: the facts are informative only. Read once per path.
    """
    path = default_gguf_path() if model_path is None else Path(model_path).expanduser()
    model_type, architectures = None, ()
    try:
        if path.is_dir():
            config = json.loads((path / "config.json").read_text(encoding="utf-8"))
            model_type, architectures = config.get("model_type"), tuple(config.get("architectures") or ())
        else:
            model_type = read_header(path).metadata.get("general.architecture")
    except (OSError, ValueError) as exc:  # HeaderError is a ValueError
        logger.warning("cannot read the architecture of %s: %s", path, exc)
    return ModelInfo(str(path), str(path), model_type, architectures)
