"""Check ``--model-path`` and ``--chat-template`` before anything heavy loads.

A wrong path used to surface after 8-18 s of loading as a 40-60 line traceback with a
misleading last line (a folder of GGUF files: "You need to have sentencepiece or tiktoken
installed"; a truncated file: "cannot reshape array"). :func:`check_model_path` reads only
a GGUF header (:mod:`.gguf_header`, about 0.1 s for a 262,144-token vocabulary) or a
folder's file names and JSON, and raises one :class:`ModelPathError` whose message names the
path, what is wrong and what to do. It also gives the model's default id: the GGUF's
``general.name``, else the file's stem or the folder's name, never a path.

Usage::

    model = check_model_path("/models/gemma-3-270m.gguf", chat_template="gemma")
    model.name            # "Gemma 3 270m"
    model.chat_template   # the Jinja text that replaces the model's own, or None
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from mcp_server.catalog import default_entry
from mcp_server.engines.embedded.chat_templates import KNOWN_TEMPLATES, ChatTemplateError, load_chat_template
from mcp_server.engines.embedded.gguf_header import HeaderError, read_header
from mcp_server.engines.embedded.model_files import default_gguf_path
from mcp_server.errors import InvalidRequest

__all__ = ["CheckedModel", "ModelPathError", "check_model_path"]

_HF_TEMPLATE_FILES = ("chat_template.jinja", "chat_template.json")
_HF_TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "tokenizer_config.json")
_GIVE = "give a GGUF file or a Hugging Face model folder"
_NO_TEMPLATE_HINT = (
    "give one with --chat-template NAME or --chat-template FILE.jinja (known names: {names})"
)


class ModelPathError(InvalidRequest):
    """``--model-path`` or ``--chat-template`` cannot be served; the message is one line naming the path."""


@dataclass(frozen=True)
class CheckedModel:
    """A model path that passed the checks.

    Attributes:
        path: the GGUF file, or the Hugging Face model folder.
        gguf: whether ``path`` is a GGUF file.
        name: the default model id: the catalog id for the bundled model, else the GGUF's
            ``general.name``, else the file's stem or the folder's name.
        chat_template: the Jinja text ``--chat-template`` gives, replacing the model's own;
            None keeps the model's.
    """

    path: Path
    gguf: bool
    name: str
    chat_template: str | None = None


def check_model_path(model_path: str | None, chat_template: str | None = None) -> CheckedModel:
    """Check that ``model_path`` can be served, without loading weights or a tokenizer.

    Checked: the path exists and can be read; a file is a complete GGUF file (magic,
    version, header, and a size that holds every tensor) with a tokenizer; a folder is a
    Hugging Face model folder (``config.json``, tokenizer files), not a folder of GGUF
    files; and the model has a chat template, or ``chat_template`` gives one.

    Args:
        model_path: a GGUF file or a Hugging Face model folder; None is the bundled
            SmolLM2-135M-Instruct.
        chat_template: ``--chat-template``: a name of
            :data:`~.chat_templates.KNOWN_TEMPLATES` or a Jinja file; None keeps the model's.

    Raises:
        ModelPathError: one line naming the path (or the template) and what to do.
        EngineUnavailable: the bundled model is not installed (``model_path`` None).
    """
    try:
        template = load_chat_template(chat_template) if chat_template else None
    except ChatTemplateError as exc:
        raise ModelPathError(str(exc)) from None
    if model_path is None:
        return CheckedModel(default_gguf_path(), True, default_entry().id, template)
    path = Path(model_path).expanduser()
    if path.is_dir():
        return _check_folder(path, model_path, template)
    if not path.exists():
        hint = (
            " (the embedded engine reads local files; --engine sglang loads Hugging Face repositories)"
            if not model_path.startswith((".", "/", "~")) and model_path.count("/") == 1
            else ""
        )
        raise ModelPathError(f"--model-path {model_path}: no such file or folder{hint}; {_GIVE}")
    if not path.is_file():
        raise ModelPathError(f"--model-path {model_path}: not a regular file; {_GIVE}")
    return _check_gguf(path, model_path, template)


def _check_gguf(path: Path, shown: str, template: str | None) -> CheckedModel:
    try:
        header = read_header(path)
    except PermissionError as exc:
        raise ModelPathError(f"--model-path {shown}: cannot be read ({exc.strerror}); check its permissions") from None
    except OSError as exc:
        reason = exc.strerror or exc
        raise ModelPathError(f"--model-path {shown}: cannot be read ({reason}); check the file and its disk") from None
    except HeaderError as exc:
        if exc.truncated:
            raise ModelPathError(f"--model-path {shown}: truncated GGUF file ({exc}); download it again") from None
        raise ModelPathError(
            f"--model-path {shown}: not a GGUF file ({exc}); give a .gguf file (llama.cpp's format) "
            "or a Hugging Face model folder"
        ) from None
    size = path.stat().st_size
    if header.data_end is not None and size < header.data_end:
        raise ModelPathError(
            f"--model-path {shown}: truncated GGUF file ({size:,} bytes, its tensors need {header.data_end:,}); "
            "download it again"
        )
    if "tokenizer.ggml.tokens" not in header.array_lengths:
        raise ModelPathError(
            f"--model-path {shown}: the GGUF file holds no tokenizer (tokenizer.ggml.tokens); "
            "use a GGUF converted with its tokenizer"
        )
    if template is None and not header.metadata.get("tokenizer.chat_template"):
        raise ModelPathError(
            f"--model-path {shown}: the GGUF file has no chat template (tokenizer.chat_template); "
            + _NO_TEMPLATE_HINT.format(names=", ".join(KNOWN_TEMPLATES))
        )
    name = str(header.metadata.get("general.name") or "").strip() or path.stem
    return CheckedModel(path, True, name, template)


def _check_folder(path: Path, shown: str, template: str | None) -> CheckedModel:
    ggufs = sorted(p.name for p in path.glob("*.gguf"))
    if not (path / "config.json").is_file():
        if ggufs:
            more = f" (and {len(ggufs) - 1} more)" if len(ggufs) > 1 else ""
            raise ModelPathError(
                f"--model-path {shown}: a folder of GGUF files; give one file, "
                f"e.g. --model-path {path / ggufs[0]}{more}"
            )
        raise ModelPathError(
            f"--model-path {shown}: a folder without a model (no config.json, no .gguf file); {_GIVE}"
        )
    if not any((path / name).is_file() for name in _HF_TOKENIZER_FILES):
        raise ModelPathError(
            f"--model-path {shown}: the model folder has no tokenizer files ({', '.join(_HF_TOKENIZER_FILES)})"
        )
    if template is None and not _folder_has_template(path):
        raise ModelPathError(
            f"--model-path {shown}: the model folder has no chat template (chat_template in tokenizer_config.json, "
            "or chat_template.jinja); " + _NO_TEMPLATE_HINT.format(names=", ".join(KNOWN_TEMPLATES))
        )
    return CheckedModel(path, False, path.resolve().name, template)


def _folder_has_template(path: Path) -> bool:
    if any((path / name).is_file() for name in _HF_TEMPLATE_FILES):
        return True
    try:
        config = json.loads((path / "tokenizer_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and bool(config.get("chat_template"))
