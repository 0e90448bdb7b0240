"""The torch-free GGUF tokenizer builder gives transformers' own tokenizer, without importing torch."""

from __future__ import annotations

import subprocess
import sys

import pytest

from mcp_server.engines.embedded.gguf_tokenizer import tokenizer_from_gguf
from mcp_server.engines.embedded.model_files import default_gguf_path
from tests.live_server import ROOT

TEXTS = ["Hello world!", "  spaced\n\nlines\t tabs", "日本語 テキスト 🎉", "<|im_start|>user\nhi<|im_end|>",
         "def f(x):\n    return x**2", "ÀÉÎõü ß"]  # fmt: skip
MESSAGES = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Name three colors."},
    {"role": "assistant", "content": "Red."},
    {"role": "user", "content": "More?"},
]


@pytest.mark.timeout(300)
def test_builds_the_tokenizer_transformers_builds_from_the_gguf():
    from transformers import AutoTokenizer  # its GGUF reader needs torch: the test set-up has it

    path = default_gguf_path()
    ours = tokenizer_from_gguf(path)
    reference = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name, local_files_only=True)
    assert ours.get_vocab() == reference.get_vocab()
    assert (ours.bos_token, ours.eos_token) == (reference.bos_token, reference.eos_token)
    for text in TEXTS:
        assert ours(text)["input_ids"] == reference(text)["input_ids"], text
    prompt = {"add_generation_prompt": True, "tokenize": True, "return_dict": True}
    assert ours.apply_chat_template(MESSAGES, **prompt)["input_ids"] == (
        reference.apply_chat_template(MESSAGES, **prompt)["input_ids"]
    )


def test_builds_it_without_importing_torch():
    code = (
        "import sys; from mcp_server.engines.embedded.gguf_tokenizer import tokenizer_from_gguf; "
        "from mcp_server.engines.embedded.model_files import default_gguf_path; "
        "t = tokenizer_from_gguf(default_gguf_path()); print(len(t), 'torch' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["49152", "False"]
