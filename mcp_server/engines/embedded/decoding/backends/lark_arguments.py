"""Lark rules (llguidance's dialect) for a call's arguments written in a notation that is not
one JSON object (:class:`mcp_server.families.arguments.ArgumentSyntax`: XML-style tagged
arguments, Python literals, Gemma 4's notation).

The rules follow the tool's ``parameters`` schema: its declared properties only (strict, as
for JSON arguments), the required ones always, first and in schema order, then the optional
ones in schema order, each at most once. Values:

* tagged: a ``string`` value is raw text that contains none of the syntax's ``forbidden``
  texts (so the parser finds its end where the grammar put it); every other value is JSON
  (``%json`` with the value's schema, enforced by llguidance);
* python / gemma: literals built from the schema (``type``: string, integer, number,
  boolean, null, array with ``items``, object with ``properties``; ``enum`` and ``const``);
  numbers are ``%json`` (their text is the same in both notations, and llguidance enforces
  ``minimum`` and the like).

A keyword these rules cannot enforce is refused (400 naming it), never ignored.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from mcp_server.errors import InvalidRequest
from mcp_server.families.arguments import GEMMA_QUOTE, ArgumentSyntax, is_raw_string, literal, type_name

__all__ = ["arguments_lark", "lark_literal", "regex_literal"]

_ANNOTATIONS = frozenset({"title", "description", "default", "examples", "$comment", "$schema"})
_ALLOWED = {
    "object": _ANNOTATIONS | {"type", "properties", "required", "additionalProperties"},
    "string": _ANNOTATIONS | {"type", "enum", "const", "minLength", "maxLength"},
    "array": _ANNOTATIONS | {"type", "items"},
    "boolean": _ANNOTATIONS | {"type"},
    "null": _ANNOTATIONS | {"type"},
}
_PYTHON_CHARACTER = '([^"\\\\\\x00-\\x1f]|\\\\(["\\\\bfnrt]|u[0-9a-fA-F]{4}))'
"""One character of a double-quoted Python string literal with JSON's escapes (no ``\\/``,
which Python keeps as two characters)."""


def arguments_lark(
    content: dict[str, Any], prefix: str, rules: list[str], json_value: Callable[[Any], str]
) -> str:
    """Add the rules of one call's arguments to ``rules``; return the expression that matches them.

    Args:
        content: an ``arguments`` structural-tag content: ``syntax`` (an
            :class:`~mcp_server.families.arguments.ArgumentSyntax` as a dict), ``json_schema``
            (the tool's parameters) and ``param`` (the request field, for errors).
        prefix: a rule-name prefix unique to this call (lower case).
        rules: the grammar's rules so far, appended to.
        json_value: ``schema -> Lark expression`` of one JSON value (the backend's ``%json``).

    Raises:
        InvalidRequest: (param ``content["param"]``) a schema keyword these rules cannot enforce.
    """
    syntax = ArgumentSyntax(**{**content["syntax"], "forbidden": tuple(content["syntax"]["forbidden"])})
    writer = _Writer(syntax, prefix, rules, json_value, content["param"])
    if syntax.notation == "gemma":  # the arguments are one object literal
        schema = content["json_schema"]
        return writer.literal({**schema, "type": schema.get("type", "object")} if isinstance(schema, dict) else schema)
    pairs = writer.pairs(content["json_schema"], nested=False)
    items = [(writer.argument(key, schema), required) for key, schema, required in pairs]
    return _ordered(items, lark_literal(syntax.separator))


class _Writer:
    def __init__(self, syntax: ArgumentSyntax, prefix: str, rules: list[str], json_value: Callable[[Any], str], param: str):
        self.syntax, self.prefix, self.rules, self.json_value, self.param = syntax, prefix, rules, json_value, param
        self.count = 0

    def pairs(self, schema: Any, nested: bool = True) -> list[tuple[str, Any, bool]]:
        """``(key, schema, required)`` of an object schema's properties: required first."""
        if not isinstance(schema, dict) or schema.get("type", "object") != "object":
            raise InvalidRequest(f"{self.syntax.notation} tool-call arguments need an object schema", param=self.param)
        self.check(schema, "object")
        properties, required = schema.get("properties") or {}, schema.get("required") or []
        if (bad := next((k for k in properties if not self.syntax.writes_key(k, nested)), None)) is not None:
            raise InvalidRequest(
                f"The argument name {bad!r} cannot be written in {self.syntax.notation} tool-call arguments "
                "so that the format's parser reads it back; rename it, or use tool_choice 'auto'.",
                param=self.param,
            )
        if undeclared := [name for name in required if name not in properties]:
            raise InvalidRequest(f"required names undeclared properties {undeclared}", param=self.param)
        ordered = [(k, properties[k], True) for k in properties if k in required]
        return ordered + [(k, properties[k], False) for k in properties if k not in required]

    def check(self, schema: dict[str, Any], kind: str) -> None:
        if extra := sorted(set(schema) - _ALLOWED[kind]):
            raise InvalidRequest(
                f"JSON Schema keyword '{extra[0]}' is not supported by constrained decoding in "
                f"{self.syntax.notation} tool-call arguments",
                param=self.param,
            )

    def argument(self, key: str, schema: Any) -> str:
        """One argument: opening, value, closing."""
        syntax = self.syntax
        if syntax.notation != "tagged":
            return f"{lark_literal(syntax.opening(key, type_name(schema)))} {self.literal(schema)} {lark_literal(syntax.close)}".strip()
        if not is_raw_string(schema):
            return f"{lark_literal(syntax.opening(key, type_name(schema)))} {self.json_value(schema)} {lark_literal(syntax.close)}"
        self.check(schema, "string")
        choices = _choices(schema)
        if choices is not None:
            texts = " | ".join(lark_literal(choice) if choice else '""' for choice in choices if isinstance(choice, str))
            return f"{lark_literal(syntax.opening(key, 'string'))} ({texts}) {lark_literal(syntax.close)}"
        return f"{lark_literal(syntax.opening(key, 'string'))} {self.raw(schema, syntax.forbidden, syntax.close)}"

    def raw(self, schema: dict[str, Any], forbidden: tuple[str, ...], end: str) -> str:
        """A lazy lexeme: text containing none of ``forbidden`` (of ``schema``'s length), then ``end``."""
        name = self.name()
        excluded = "|".join(regex_literal(text) for text in (*forbidden, end))
        self.rules.append(f"{name.upper()}_TEXT: /(.|\\n){_repeat(schema)}/ & ~/(.|\\n)*({excluded})(.|\\n)*/")
        self.rules.append(f"{name}[lazy]: {name.upper()}_TEXT {lark_literal(end)}")
        return name

    def literal(self, schema: Any) -> str:
        """A rule for a python / gemma literal of ``schema``; returns its name."""
        notation = self.syntax.notation
        if not isinstance(schema, dict):
            raise InvalidRequest(f"{notation} tool-call arguments need a typed schema for every value", param=self.param)
        name = self.name()
        choices = _choices(schema)
        kinds = schema.get("type")
        if choices is not None:
            body = " | ".join(lark_literal(literal(notation, value)) for value in choices)
        elif isinstance(kinds, list) and kinds:
            body = " | ".join(self.literal({**schema, "type": kind}) for kind in kinds)
        elif kinds in ("integer", "number"):
            body = self.json_value(schema)
        elif kinds in _ALLOWED:
            self.check(schema, kinds)
            body = self.typed(schema, kinds)
        else:
            raise InvalidRequest(f"{notation} tool-call arguments need a 'type' for every value", param=self.param)
        self.rules.append(f"{name}: {body}")
        return name

    def typed(self, schema: dict[str, Any], kind: str) -> str:
        python = self.syntax.notation == "python"
        if kind in ("boolean", "null"):
            return " | ".join(lark_literal(literal(self.syntax.notation, v)) for v in ((True, False) if kind == "boolean" else (None,)))
        if kind == "string":
            if python:
                return f'/"{_PYTHON_CHARACTER}{_repeat(schema)}"/'
            return f"{lark_literal(GEMMA_QUOTE)} {self.raw(schema, (), GEMMA_QUOTE)}"
        separator = lark_literal(", " if python else ",")
        if kind == "array":
            if "items" not in schema:
                raise InvalidRequest(f"{self.syntax.notation} tool-call arguments need 'items' for an array", param=self.param)
            item = self.literal(schema["items"])
            return f'"[" ({item} ({separator} {item})*)? "]"'
        pairs = [
            (f"{lark_literal(json.dumps(key, ensure_ascii=False) + ': ' if python else key + ':')} {self.literal(sub)}", required)
            for key, sub, required in self.pairs(schema)
        ]
        return f'"{{" {_ordered(pairs, separator)} "}}"'

    def name(self) -> str:
        self.count += 1
        return f"{self.prefix}v{self.count}"


def _repeat(schema: dict[str, Any]) -> str:
    """The regex repetition of a string's ``minLength`` / ``maxLength`` (characters): ``*``
    without them."""
    low, high = schema.get("minLength", 0), schema.get("maxLength")
    return "*" if not low and high is None else f"{{{low},{'' if high is None else high}}}"


def _choices(schema: dict[str, Any]) -> list[Any] | None:
    if "const" in schema:
        return [schema["const"]]
    return list(schema["enum"]) if isinstance(schema.get("enum"), list) else None


def _ordered(items: list[tuple[str, bool]], separator: str) -> str:
    """An expression for ``items`` in order, each written once, the optional ones (``False``)
    left out or not, ``separator`` between two written ones."""
    if not items:
        return ""

    def after(start: int) -> str:  # something is already written
        parts = [f"{separator} {expr}".strip() if required else f"({separator} {expr}".strip() + ")?" for expr, required in items[start:]]
        return " ".join(parts)

    if items[0][1]:
        return f"{items[0][0]} {after(1)}".strip()
    # All optional (required ones come first): the first written one, then the rest.
    return "(" + " | ".join(f"{expr} {after(i + 1)}".strip() for i, (expr, _) in enumerate(items)) + ")?"


def lark_literal(text: str) -> str:
    """A Lark string literal of ``text``; empty for empty text (nothing to match)."""
    return json.dumps(text) if text else ""


def regex_literal(text: str) -> str:
    """``text`` as a regex that matches it literally (ASCII punctuation as ``\\xNN``)."""
    return "".join(f"\\x{ord(c):02x}" if ord(c) < 128 and not c.isalnum() else c for c in text)
