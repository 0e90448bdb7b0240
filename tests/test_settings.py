"""The one table of flags: every setting is a flag and an environment variable, documented."""

from __future__ import annotations

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
        (["--runner", "llamacpp", "--model-path", "/tmp"], "GGUF files on the CPU only; use --runner torch. (at runner)"),
    ],
)
def test_impossible_engine_settings_are_a_clear_error_before_loading(argv, message, capsys):
    assert main(["serve", *argv]) == 2
    assert message in capsys.readouterr().err
