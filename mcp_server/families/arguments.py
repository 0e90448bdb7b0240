"""How a format writes a call's arguments when they are not one JSON object: data for the
grammar backends (which compile it into a constraint,
:mod:`mcp_server.engines.embedded.decoding.backends.lark_arguments`) and for rendering past
calls into a prompt (:func:`render_arguments`).

Three notations, each read back by its family's parser (:mod:`mcp_server.families`):

* ``tagged`` (XML-style: qwen3_coder, glm45/glm47, DSML, kimi_k3): one element per argument,
  ``open + VALUE + close``; a value whose schema says ``string`` is raw text (it may not
  contain any of ``forbidden``, which would end it early), any other value is JSON;
* ``python`` (pythonic): ``key=VALUE`` with Python literals (``"text"``, ``True``, ``None``,
  ``[..]``, ``{"k": v}``);
* ``gemma`` (gemma4): an object literal ``{key:VALUE,...}`` with strings between ``<|"|>``
  delimiters, bare keys, JSON numbers and ``true``/``false``/``null``.

``xgrammar_style`` names xgrammar's ``JSONSchemaFormat`` style for the same text (xgrammar
0.2.9 ``structural_tag.py``), which the xgrammar backend compiles instead; set only where
every text the style allows parses back to a valid value: its ``qwen_xml``, ``glm_xml`` and
``kimi_k3_xml`` allow whitespace around a raw string value (``<arg_value> Paris\n</arg_value>``),
which those families' parsers keep (an ``enum`` value then fails), so those formats have none.
"""

from __future__ import annotations

import json
import keyword
from dataclasses import dataclass
from typing import Any

__all__ = ["GEMMA_QUOTE", "ArgumentSyntax", "is_raw_string", "literal", "render_arguments", "type_name"]

GEMMA_QUOTE = '<|"|>'
"""Gemma 4's string delimiter."""


@dataclass(frozen=True)
class ArgumentSyntax:
    """One format's argument notation.

    Attributes:
        notation: ``tagged``, ``python`` or ``gemma`` (see the module docstring).
        open: text before a value; ``{key}`` is the argument name, ``{type}`` its JSON type
            (``string`` for raw text), ``{string}`` ``true`` for raw text else ``false``.
        close: text after a value.
        separator: text between two arguments.
        forbidden: texts a raw string value may not contain (its end as the parser finds it).
        xgrammar_style: xgrammar's name of this notation, or None (it has none).
    """

    notation: str
    open: str = ""
    close: str = ""
    separator: str = ""
    forbidden: tuple[str, ...] = ()
    xgrammar_style: str | None = None

    def writes_key(self, key: str, nested: bool = False) -> bool:
        """Whether this notation writes argument name ``key`` so that its parser reads it back:
        a Python keyword argument (top level; nested keys are quoted) and a Gemma 4 bare key
        need an identifier; an XML-style element's name may not hold ``<``, ``>`` or a line break."""
        if self.notation == "python":
            return nested or _python_name(key)
        if self.notation == "gemma":
            return key.isidentifier()
        return not any(c in key for c in "<>\n")

    def writes_function(self, name: str) -> bool:
        """Whether a call of function ``name`` written in this notation parses back: pythonic
        writes ``name(...)``, a Python call, so ``name`` must be a Python name (not
        ``get-weather``, not ``class``); the others write names the OpenAI name pattern allows."""
        return self.notation != "python" or _python_name(name)

    def opening(self, key: str, kind: str) -> str:
        """``open`` for argument ``key`` whose value has JSON type ``kind``."""
        string = "true" if kind == "string" else "false"
        return self.open.replace("{key}", key).replace("{type}", kind).replace("{string}", string)


def _python_name(name: str) -> bool:
    return name.isidentifier() and not keyword.iskeyword(name)


def is_raw_string(schema: Any) -> bool:
    """Whether a tagged format writes a value of ``schema`` as raw text: its type is exactly
    ``string`` (the rule of :func:`mcp_server.families.base.coerce`, which reads it back)."""
    kind = schema.get("type") if isinstance(schema, dict) else None
    return kind == "string" or kind == ["string"]


def type_name(schema: Any) -> str:
    """The JSON type a tagged format names for a value of ``schema``: its ``type`` when it is
    one name (``integer`` is ``number``, as xgrammar's ``kimi_k3_xml`` writes it), else ``json``."""
    kind = schema.get("type") if isinstance(schema, dict) else None
    kind = kind[0] if isinstance(kind, list) and len(kind) == 1 else kind
    return ("number" if kind == "integer" else kind) if isinstance(kind, str) else "json"


def render_arguments(syntax: ArgumentSyntax, arguments: str) -> str:
    """The text of a call's arguments (JSON object text) in ``syntax``, as the grammar emits it
    (JSON values compact; a value's type named from the value, not the schema).

    Arguments that are not a JSON object are written as JSON text (tagged) or left out.
    """
    try:
        values = json.loads(arguments or "{}")
    except ValueError:
        values = None
    if not isinstance(values, dict):
        return arguments if syntax.notation == "tagged" else ""
    if syntax.notation == "gemma":
        return literal("gemma", values)
    parts = []
    for key, value in values.items():
        if syntax.notation == "tagged":
            kind = "string" if isinstance(value, str) else type_name({"type": _json_type(value)})
            text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, separators=(",", ":"))
            parts.append(syntax.opening(key, kind) + text + syntax.close)
        else:
            parts.append(syntax.opening(key, _json_type(value)) + literal(syntax.notation, value) + syntax.close)
    return syntax.separator.join(parts)


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if value is None:
        return "null"
    if isinstance(value, int | float):
        return "integer" if isinstance(value, int) else "number"
    return {str: "string", list: "array", dict: "object"}[type(value)]


def literal(notation: str, value: Any) -> str:
    """``value`` as a ``python`` or ``gemma`` literal (Python: ``"a"``, ``True``, ``None``; Gemma:
    ``<|\"|>a<|\"|>``, ``true``, ``null``)."""
    python = notation == "python"
    if isinstance(value, bool) or value is None:
        return {True: "True", False: "False", None: "None"}[value] if python else json.dumps(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False) if python else GEMMA_QUOTE + value + GEMMA_QUOTE
    if isinstance(value, list):
        return "[" + (", " if python else ",").join(literal(notation, item) for item in value) + "]"
    if isinstance(value, dict):
        pairs = [(f"{json.dumps(k, ensure_ascii=False)}: " if python else f"{k}:") + literal(notation, v) for k, v in value.items()]
        return "{" + (", " if python else ",").join(pairs) + "}"
    return json.dumps(value)
