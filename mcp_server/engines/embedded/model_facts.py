"""What a model's own files say about it (for SGLang's ``/model_info``)."""

from __future__ import annotations

import functools
import json
import logging
import struct
from pathlib import Path
from typing import BinaryIO

from mcp_server.engines.base import ModelInfo
from mcp_server.engines.embedded.model_files import default_gguf_path

__all__ = ["model_info"]

logger = logging.getLogger(__name__)


@functools.cache
def model_info(model_path: str | None) -> ModelInfo:
    """Where a GGUF file's or Hugging Face directory's weights come from, and its architecture.

    Args:
        model_path: the file or directory; None for the bundled GGUF.

    Returns:
        For a GGUF file its ``general.architecture`` (``llama``) as ``model_type`` and no
        model classes; for a directory its ``config.json``'s ``model_type`` and
        ``architectures`` (``LlamaForCausalLM``). Files that cannot be read give neither:
        the facts are informative only. Read once per path.
    """
    path = default_gguf_path() if model_path is None else Path(model_path).expanduser()
    model_type, architectures = None, ()
    try:
        if path.is_dir():
            config = json.loads((path / "config.json").read_text(encoding="utf-8"))
            model_type, architectures = config.get("model_type"), tuple(config.get("architectures") or ())
        else:
            with path.open("rb") as file:
                model_type = _gguf_string(file, "general.architecture")
    except (OSError, ValueError, struct.error) as exc:
        logger.warning("cannot read the architecture of %s: %s", path, exc)
    return ModelInfo(str(path), str(path), model_type, architectures)


_GGUF_STRING = 8
"""The value type of a string in a GGUF key-value pair (GGUF specification, ``gguf_metadata_value_type``)."""
_GGUF_SCALAR_SIZES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
"""Bytes of each scalar value type (u8, i8, u16, i16, u32, i32, f32, bool, u64, i64, f64)."""


def _gguf_string(file: BinaryIO, key: str) -> str | None:
    """A string value of a GGUF file's header, read only until ``key`` (the ``gguf`` package's
    reader parses every array of the header first: 18 s for the bundled model's vocabulary on
    a busy machine).

    The header (GGUF versions 2 and 3, little-endian): ``GGUF``, a u32 version, u64 tensor
    and key-value counts, then each pair as a u64-length key, a u32 value type and the value.
    The general keys come first; the search skips strings and scalars and stops at the
    first array (the vocabulary's come later).

    Raises:
        ValueError: not a GGUF file.
        struct.error: the file ends early.
    """
    magic, _version, _tensors, pairs = struct.unpack("<4sIQQ", file.read(24))
    if magic != b"GGUF":
        raise ValueError("not a GGUF file")

    def text() -> str:
        (size,) = struct.unpack("<Q", file.read(8))
        return file.read(size).decode("utf-8", errors="replace")

    for _ in range(pairs):
        name = text()
        (kind,) = struct.unpack("<I", file.read(4))
        if kind in _GGUF_SCALAR_SIZES:
            file.seek(_GGUF_SCALAR_SIZES[kind], 1)
        elif kind != _GGUF_STRING:
            return None
        elif (value := text()) and name == key:
            return value
    return None
