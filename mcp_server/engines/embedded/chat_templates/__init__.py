"""Known chat templates, by name, for ``--chat-template`` (as ``llama-server``'s flag takes a name or a file).

Each template is a Jinja file in this folder, written for Hugging Face's
``apply_chat_template`` (variables ``messages``, ``add_generation_prompt``,
``bos_token``, ``eos_token``), whose messages carry string ``content``
(:func:`~mcp_server.engines.embedded.decoding.toolcalls.render_messages` renders tool
calls and results as text first).

Usage::

    text = load_chat_template("gemma")                 # a known name
    text = load_chat_template("/models/my-model.jinja")  # or a file
"""

from __future__ import annotations

from pathlib import Path

from jinja2 import TemplateSyntaxError
from jinja2.sandbox import ImmutableSandboxedEnvironment

__all__ = ["KNOWN_TEMPLATES", "ChatTemplateError", "load_chat_template"]

_FOLDER = Path(__file__).parent
KNOWN_TEMPLATES: tuple[str, ...] = tuple(sorted(path.stem for path in _FOLDER.glob("*.jinja")))
"""The names ``--chat-template`` knows: ``chatml``, ``gemma``, ``llama3``, ``mistral``."""


class ChatTemplateError(ValueError):
    """``--chat-template`` names no known template and no readable Jinja file; the message says which."""


def load_chat_template(value: str) -> str:
    """The Jinja text of a known template's name, or of a file.

    Args:
        value: a name of :data:`KNOWN_TEMPLATES`, or the path of a Jinja file.

    Raises:
        ChatTemplateError: ``value`` is neither, the file cannot be read as UTF-8 text,
            or its Jinja syntax is wrong (the message gives the line).
    """
    path = _FOLDER / f"{value}.jinja" if value in KNOWN_TEMPLATES else Path(value).expanduser()
    if not path.is_file():
        raise ChatTemplateError(
            f"--chat-template {value}: neither a Jinja file nor a known template "
            f"(known: {', '.join(KNOWN_TEMPLATES)})"
        )
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ChatTemplateError(f"--chat-template {value}: cannot read the file ({exc})") from None
    try:
        ImmutableSandboxedEnvironment(extensions=["jinja2.ext.loopcontrols"]).parse(text)
    except TemplateSyntaxError as exc:
        raise ChatTemplateError(
            f"--chat-template {value}: Jinja syntax error at line {exc.lineno}: {exc.message}"
        ) from None
    return text
