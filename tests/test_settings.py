"""The one table of flags: every setting is a flag and an environment variable, documented."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from mcp_server.cli import _settings, build_parser, main
from mcp_server.settings import ENV_PREFIX, Settings, flags

README = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("name,option", [(name, option) for name, option, _, _ in flags()])
def test_every_flag_and_its_variable_are_in_the_readme_table(name, option):
    rows = [line for line in README.splitlines() if line.startswith(f"| `{option}`")]
    assert rows, f"README's configuration table has no row for {option}"
    assert f"`{ENV_PREFIX}{name.upper()}`" in rows[0]


def test_environment_sets_the_default_and_the_flag_wins(monkeypatch):
    monkeypatch.setenv("CHATCAP_MAX_RUNNING_REQUESTS", "3")
    monkeypatch.setenv("CHATCAP_PRICE", "0.5,1.5")
    monkeypatch.setenv("CHATCAP_ENABLE_DETERMINISTIC_INFERENCE", "true")
    monkeypatch.setenv("CHATCAP_CACHE_DIR", "/tmp/chatcap-cache")
    settings = _settings(build_parser().parse_args(["serve", "--port", "9001", "--tp-size", "2"]))
    assert settings == Settings(
        port=9001, max_running_requests=3, price=(0.5, 1.5), enable_deterministic_inference=True,
        cache_dir=Path("/tmp/chatcap-cache"), sglang_args=("--tp-size", "2"),
    )
    flagged = _settings(build_parser().parse_args(["mcp", "--max-running-requests", "5"]))
    assert flagged.max_running_requests == 5 and flagged.port == Settings.port


def test_a_variable_that_does_not_parse_is_a_clear_error(monkeypatch, capsys):
    monkeypatch.setenv("CHATCAP_PORT", "eighty")
    assert main(["serve"]) == 2
    assert "CHATCAP_PORT='eighty'" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--max-running-requests", "0"], "max_running_requests must be at least 1. (at max_running_requests)"),
        (["--runner", "llamacpp", "--model-path", "{hf}"], "GGUF files on the CPU only; use --runner torch. (at runner)"),
    ],
)
def test_impossible_engine_settings_are_a_clear_error_before_loading(argv, message, capsys, tmp_path):
    hf = tmp_path / "model"  # a Hugging Face model folder as far as the start-up checks look
    hf.mkdir()
    for name, text in [("config.json", "{}"), ("tokenizer.json", "{}"), ("tokenizer_config.json", '{"chat_template": "x"}')]:
        (hf / name).write_text(text)
    assert main(["serve", "--port", "0", *(arg.format(hf=hf) for arg in argv)]) == 2
    assert message in capsys.readouterr().err


def test_served_model_name_repeats_and_splits_on_commas(monkeypatch):
    monkeypatch.setenv("CHATCAP_SERVED_MODEL_NAME", "from-env")
    parse = build_parser().parse_args
    assert _settings(parse(["serve"])).served_model_name == ("from-env",)
    given = ["serve", "--served-model-name", "a,b", "--served-model-name", "c"]
    assert _settings(parse(given)).served_model_name == ("a", "b", "c")


def _commands(parser: argparse.ArgumentParser, name: str = "chatcap"):
    """Every (sub-)command's parser, by its command line."""
    yield name, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub_name, sub in action.choices.items():
                yield from _commands(sub, f"{name} {sub_name}")


def test_every_help_shows_its_defaults_and_one_example():
    commands = dict(_commands(build_parser()))
    assert {"chatcap serve", "chatcap mcp", "chatcap generate", "chatcap keys create", "chatcap keys top-up"} <= set(commands)
    for name, parser in commands.items():
        text = parser.format_help()
        assert text.split("example:\n  ", 1)[1].startswith("chatcap "), f"{name}: no example"
        for action in parser._actions:
            if action.option_strings and action.option_strings[0] not in ("-h", "--version"):
                assert "default" in action.help, f"{name} {action.option_strings[0]}: no default in --help"


def test_the_top_level_description_is_whole_sentences_without_markup(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    description = capsys.readouterr().out.split("\n\n")[1]
    assert description.rstrip().endswith(".") and "``" not in description
