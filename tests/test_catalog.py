"""The model catalog: every model the seed names, with checked fields and lookups."""

from __future__ import annotations

from pathlib import Path

import pytest

from mcp_server.catalog import default_entry, find_entry, load_catalog
from mcp_server.errors import CapabilityError

SEED_MODELS = [
    "meta-llama/Meta-Llama-3.1-8B-Instruct",
    "meta-llama/Meta-Llama-3.1-70B-Instruct",
    "meta-llama/Meta-Llama-3.1-405B-Instruct",
    "Qwen/Qwen2.5-72B-Instruct",
    "deepseek-ai/DeepSeek-V3",
    "deepseek-ai/DeepSeek-R1",
    "NousResearch/Hermes-3-Llama-3.1-70B",
    "mistralai/Mistral-7B-Instruct",
    "meta-llama/Llama-3.2-90B-Vision-Instruct",
    "Qwen/Qwen2-VL-72B-Instruct",
]


def test_catalog_lists_every_seed_model_and_the_embedded_default():
    ids = [entry.id for entry in load_catalog()]
    assert set(SEED_MODELS) <= set(ids)
    assert default_entry().id == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert default_entry().embedded_tool_call_format == "hermes"


def test_parsers_modalities_and_prices_follow_the_model_families():
    assert find_entry("deepseek-ai/DeepSeek-R1").reasoning_parser == "deepseek-r1"
    assert [e.id for e in load_catalog() if e.reasoning_parser] == ["deepseek-ai/DeepSeek-R1"]
    assert find_entry("Qwen/Qwen2.5-72B-Instruct").tool_call_parser == "qwen25"
    assert find_entry("NousResearch/Hermes-3-Llama-3.1-70B").tool_call_parser == "hermes"
    vision = {e.id for e in load_catalog() if "image" in e.input_modalities}
    assert vision == {"meta-llama/Llama-3.2-90B-Vision-Instruct", "Qwen/Qwen2-VL-72B-Instruct",
                      "Qwen/Qwen2-VL-7B-Instruct"}
    llama = find_entry("meta-llama/Meta-Llama-3.1-8B-Instruct")
    assert llama.price.cost(prompt_tokens=1_000_000, completion_tokens=500_000) == pytest.approx(0.15)


def test_find_entry_by_id_hf_path_or_local_directory_name():
    entry = find_entry("mistralai/Mistral-7B-Instruct")
    assert find_entry("mistralai/Mistral-7B-Instruct-v0.3") is entry
    assert find_entry("/models/Mistral-7B-Instruct-v0.3/") is entry
    assert find_entry("my-org/unknown-model") is None


def test_card_carries_catalog_facts_under_the_served_name():
    card = find_entry("meta-llama/Llama-3.2-90B-Vision-Instruct").card("vision", context_length=4096)
    assert (card.id, card.context_length, card.input_modalities) == ("vision", 4096, ("text", "image"))
    assert card.tool_call_format == "llama3"


def test_malformed_catalog_names_the_entry_and_field(tmp_path: Path):
    bad = tmp_path / "catalog.yaml"
    bad.write_text(
        "models:\n  - {id: a, model_path: a, owned_by: x, context_length: 10, tool_call_parser: null,\n"
        "     embedded_tool_call_format: null, reasoning_parser: null, input_modalities: [text, audio],\n"
        "     price: {input: 1, output: 1}, sglang_args: []}\n"
    )
    with pytest.raises(CapabilityError, match=r"models\[0\]\.input_modalities"):
        load_catalog(bad)
    bad.write_text("models:\n  - {id: a}\n")
    with pytest.raises(CapabilityError, match="missing fields"):
        load_catalog(bad)


def test_every_catalog_name_is_in_the_embedded_engines_registries():
    from mcp_server.engines.embedded.decoding import check_catalog

    check_catalog(load_catalog())  # raises on the first unknown name


def test_an_unknown_format_name_is_refused_naming_the_model_and_field():
    from dataclasses import replace

    from mcp_server.engines.embedded.decoding import check_catalog

    broken = replace(find_entry("deepseek-ai/DeepSeek-V3"), embedded_tool_call_format="deepseek")
    with pytest.raises(CapabilityError, match=r"DeepSeek-V3.*embedded_tool_call_format 'deepseek' is unknown"):
        check_catalog([broken])
    broken = replace(default_entry(), reasoning_parser="kimi-k9")
    with pytest.raises(CapabilityError, match=r"reasoning_parser 'kimi-k9' is unknown; known: \[.*'deepseek-r1'.*'qwen3'"):
        check_catalog([broken])


def test_a_model_folder_named_like_a_catalog_model_builds_an_embedded_engine(tmp_path: Path):
    from mcp_server.engines.embedded.engine import EmbeddedEngine

    for name in ("DeepSeek-V3", "Mistral-7B-Instruct", "Meta-Llama-3.1-8B-Instruct"):
        folder = tmp_path / name
        folder.mkdir()
        for file, text in [("config.json", "{}"), ("tokenizer.json", "{}"), ("chat_template.jinja", "x")]:
            (folder / file).write_text(text)  # what the start-up checks look for in a model folder
        card = EmbeddedEngine(model_path=str(folder)).models[0]  # builds, loads nothing yet
        assert card.tool_call_format in {"deepseekv3", "mistral", "llama3"}
