"""Build a GGUF file's tokenizer from its metadata without torch.

A GGUF file has no ``tokenizer.json``: it stores the vocabulary, the merges and the special
token ids as metadata under llama.cpp's key names (``tokenizer.ggml.*``, ggml's
``docs/gguf.md``). transformers knows how to turn those into a ``tokenizers`` backend
(``transformers.integrations.gguf.convert_gguf_tokenizer``, the builder its own
``from_pretrained(..., gguf_file=...)`` uses), but its GGUF reader imports torch. Here the
metadata comes from our own header reader (:mod:`gguf_header`), so a torch-free install
(``pip install chatcap``, no ``[torch]`` extra) converts the bundled model's tokenizer on its
first start. The key renames below are those of ``GGUF_TOKENIZER_MAPPING``.

Usage::

    tokenizer = tokenizer_from_gguf(Path("model.gguf"))      # a PreTrainedTokenizerFast
    tokenizer.save_pretrained(folder)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mcp_server.engines.embedded.gguf_header import read_header

__all__ = ["tokenizer_from_gguf"]

_FULL_ARRAYS = ("tokenizer.ggml.tokens", "tokenizer.ggml.merges", "tokenizer.ggml.token_type", "tokenizer.ggml.scores")
"""The arrays the builders read: the vocabulary, the merges, the token types (control tokens
become special tokens, user-defined ones added tokens: Gemma's ``<start_of_turn>``) and the
scores (merges recovered from a sentencepiece vocabulary)."""

_SPECIAL_TOKENS = {
    "bos_token": "tokenizer.ggml.bos_token_id",
    "eos_token": "tokenizer.ggml.eos_token_id",
    "unk_token": "tokenizer.ggml.unknown_token_id",
    "pad_token": "tokenizer.ggml.padding_token_id",
}


def tokenizer_from_gguf(path: Path) -> Any:
    """The tokenizer the GGUF file ``path`` describes, as a ``PreTrainedTokenizerFast``.

    The same tokenizer ``AutoTokenizer.from_pretrained(folder, gguf_file=name)`` builds
    (same backend builder, same special tokens, ``add_bos_token`` and chat template), without
    importing torch.

    Raises:
        HeaderError: the file is not a readable GGUF file.
        ValueError: the file holds no vocabulary, or a tokenizer type transformers cannot build.
        OSError: the file cannot be read.
    """
    from transformers import PreTrainedTokenizerFast
    from transformers.integrations.gguf import GGUF_TOKENIZER_MAPPING, convert_gguf_tokenizer

    metadata = read_header(path, arrays=_FULL_ARRAYS).metadata
    if "tokenizer.ggml.tokens" not in metadata:
        raise ValueError(f"{path} holds no tokenizer vocabulary (tokenizer.ggml.tokens)")
    tokenizer_dict, config = (
        {name: metadata[f"tokenizer.{key}"] for key, name in renames.items() if f"tokenizer.{key}" in metadata}
        for renames in (GGUF_TOKENIZER_MAPPING["tokenizer"], GGUF_TOKENIZER_MAPPING["tokenizer_config"])
    )
    if tokenizer_dict.get("tokenizer_type") == "llama":
        config.setdefault("add_bos_token", True)  # llama.cpp adds BOS to a sentencepiece vocabulary by default
    elif tokenizer_dict.get("tokenizer_type") == "gemma4":
        config["add_bos_token"] = False  # its chat template writes <bos> itself
    tokens = tokenizer_dict["tokens"]
    for name, key in _SPECIAL_TOKENS.items():
        token_id = metadata.get(key)
        config[name] = tokens[token_id] if token_id is not None and 0 <= token_id < len(tokens) else None
    backend, extra = convert_gguf_tokenizer(metadata["general.architecture"], tokenizer_dict)
    return PreTrainedTokenizerFast(tokenizer_object=backend, **config, **extra)
