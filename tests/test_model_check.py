"""``--model-path`` and ``--chat-template`` are checked before anything loads (issue 19, item 1).

Each bad path ends ``chatcap serve`` (and ``chatcap mcp``) with one line naming the path
and what to do, exit status 2, no traceback, in under 2 s of CPU time (the bound the
issue sets; measured as the child's CPU time, which a busy machine does not stretch).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import gguf
import numpy as np
import pytest

from mcp_server.engines.embedded.chat_templates import KNOWN_TEMPLATES, load_chat_template
from mcp_server.engines.embedded.gguf_header import read_header
from mcp_server.engines.embedded.model_check import ModelPathError, check_model_path
from mcp_server.engines.embedded.model_files import default_gguf_path
from tests.live_server import ROOT

TEMPLATE = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"


def write_gguf(path: Path, name: str | None = "Tiny Test", template: str | None = TEMPLATE, arch: str = "llama") -> Path:
    """A small, complete GGUF file: a 3-token vocabulary, one tensor, optional name and chat template."""
    writer = gguf.GGUFWriter(str(path), arch)
    if name:
        writer.add_name(name)
    writer.add_token_list(["a", "b", "c"])
    if template:
        writer.add_chat_template(template)
    writer.add_tensor("x", np.zeros((4, 8), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def run_cli(*args: str) -> tuple[int, str, str, float]:
    """Run ``chatcap ARGS``; returns exit status, stdout, stderr and the child's CPU seconds."""
    process = subprocess.Popen(
        [sys.executable, "-m", "mcp_server", *args], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    _, status, usage = os.wait4(process.pid, 0)  # the outputs are one line: the pipes cannot fill
    process.returncode = os.waitstatus_to_exitcode(status)
    return process.returncode, process.stdout.read(), process.stderr.read(), usage.ru_utime + usage.ru_stime


@pytest.fixture(scope="module")
def bad_paths(tmp_path_factory) -> dict[str, tuple[str, str]]:
    """Case -> (``--model-path``, a piece of the expected message)."""
    root = tmp_path_factory.mktemp("models")
    bundled = default_gguf_path().read_bytes()
    (root / "ggufs").mkdir()
    (root / "ggufs" / "b.gguf").write_bytes(bundled[:1024])
    (root / "ggufs" / "a.gguf").write_bytes(bundled[:1024])
    (root / "empty").mkdir()
    (root / "notes.gguf").write_text("not a model\n")
    (root / "half.gguf").write_bytes(bundled[: len(bundled) // 2])
    (root / "header.gguf").write_bytes(bundled[:1000])
    write_gguf(root / "untemplated.gguf", template=None)
    return {
        "missing": (str(root / "nope.gguf"), "no such file or folder"),
        "a hub id": ("HuggingFaceTB/SmolLM2-135M-Instruct", "--engine sglang"),
        "folder of GGUFs": (str(root / "ggufs"), f"give one file, e.g. --model-path {root / 'ggufs' / 'a.gguf'} (and 1 more)"),
        "folder without a model": (str(root / "empty"), "no config.json, no .gguf file"),
        "not a GGUF": (str(root / "notes.gguf"), "not a GGUF file"),
        "truncated tensors": (str(root / "half.gguf"), f"truncated GGUF file ({len(bundled) // 2:,} bytes, its tensors need {len(bundled):,})"),
        "truncated header": (str(root / "header.gguf"), "truncated GGUF file (the file ends at byte 1,000 inside its header)"),
        "unreadable": ("/proc/self/mem", "cannot be read"),  # a regular file that even root cannot read from byte 0
        "no chat template": (str(root / "untemplated.gguf"), "has no chat template (tokenizer.chat_template); give one with --chat-template"),
    }  # fmt: skip


CASES = ["missing", "a hub id", "folder of GGUFs", "folder without a model", "not a GGUF", "truncated tensors",
         "truncated header", "unreadable", "no chat template"]  # fmt: skip


@pytest.mark.parametrize("case", CASES)
def test_a_bad_model_path_is_one_line_and_exit_2_before_anything_loads(case, bad_paths):
    path, expected = bad_paths[case]
    status, out, err, cpu_seconds = run_cli("serve", "--port", "0", "--model-path", path)
    assert status == 2, err
    assert err.count("\n") == 1 and "Traceback" not in err and out == ""
    assert err.startswith(f"chatcap: error: --model-path {path}: ") and expected in err
    assert cpu_seconds < 2.0


def test_mcp_over_stdio_checks_the_model_path_too(bad_paths):
    path, expected = bad_paths["not a GGUF"]
    status, _, err, _ = run_cli("mcp", "--model-path", path)
    assert status == 2 and err.count("\n") == 1 and expected in err


def test_an_unknown_chat_template_names_the_known_ones():
    status, _, err, _ = run_cli("serve", "--port", "0", "--chat-template", "no-such-template")
    assert status == 2 and err.count("\n") == 1
    assert f"--chat-template no-such-template: neither a Jinja file nor a known template (known: {', '.join(KNOWN_TEMPLATES)})" in err


def test_a_template_file_with_a_syntax_error_names_its_line(tmp_path):
    broken = tmp_path / "broken.jinja"
    broken.write_text("{% for m in messages %}\n{{ m['content'] }\n")
    with pytest.raises(ModelPathError, match=rf"--chat-template {broken}: Jinja syntax error at line 2"):
        check_model_path(None, str(broken))


def test_the_default_id_is_the_general_name_else_the_file_stem(tmp_path):
    assert check_model_path(str(write_gguf(tmp_path / "named.gguf"))).name == "Tiny Test"
    assert check_model_path(str(write_gguf(tmp_path / "my-model.Q4.gguf", name=None))).name == "my-model.Q4"
    assert check_model_path(None).name == "HuggingFaceTB/SmolLM2-135M-Instruct"


def test_a_chat_template_makes_an_untemplated_model_servable(tmp_path):
    path = str(write_gguf(tmp_path / "untemplated.gguf", template=None))
    assert check_model_path(path, "chatml").chat_template == load_chat_template("chatml")
    template = tmp_path / "mine.jinja"
    template.write_text(TEMPLATE)
    assert check_model_path(path, str(template)).chat_template == TEMPLATE


def test_a_hugging_face_folder_needs_a_tokenizer_and_a_template(tmp_path):
    folder = tmp_path / "Qwen2.5-0.5B-Instruct"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    with pytest.raises(ModelPathError, match="no tokenizer files"):
        check_model_path(str(folder))
    (folder / "tokenizer_config.json").write_text('{"bos_token": "<s>"}')
    with pytest.raises(ModelPathError, match="the model folder has no chat template"):
        check_model_path(str(folder))
    (folder / "chat_template.jinja").write_text(TEMPLATE)
    checked = check_model_path(str(folder))
    assert (checked.name, checked.gguf, checked.chat_template) == ("Qwen2.5-0.5B-Instruct", False, None)


def test_the_header_reader_sees_what_the_bundled_file_declares():
    path = default_gguf_path()
    header = read_header(path)
    assert header.data_end == path.stat().st_size
    assert header.array_lengths["tokenizer.ggml.tokens"] == 49152
    assert header.metadata["general.architecture"] == "llama" and "<|im_start|>" in header.metadata["tokenizer.chat_template"]


@pytest.mark.parametrize("name", KNOWN_TEMPLATES)
def test_every_known_template_renders_a_system_and_user_turn_with_the_content_intact(name):
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    template = ImmutableSandboxedEnvironment().from_string(load_chat_template(name))
    messages = [{"role": "system", "content": "S-text"}, {"role": "user", "content": "U-text"},
                {"role": "assistant", "content": "A-text"}, {"role": "user", "content": "V-text"}]  # fmt: skip
    text = template.render(messages=messages, add_generation_prompt=True, bos_token="<B>", eos_token="<E>")
    assert all(m["content"] in text for m in messages)
    assert text.index("S-text") < text.index("U-text") < text.index("A-text") < text.index("V-text")
