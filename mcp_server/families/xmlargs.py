"""Arguments written as tagged key/value pairs with raw (unquoted) string values, shared by
the XML-style families (qwen3_coder, glm45/glm47, deepseekv32 DSML, kimi_k3)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from mcp_server.families.base import Tools, coerce

__all__ = ["arguments_text", "schema_of"]


def schema_of(tools: Tools, function: str, key: str) -> dict[str, Any] | None:
    """The JSON Schema of parameter ``key`` of ``function`` in the request's tools, or None."""
    properties = (tools.get(function) or {}).get("properties") or {}
    schema = properties.get(key)
    return schema if isinstance(schema, dict) else None


def arguments_text(tools: Tools, function: str, pairs: Iterable[tuple[str, str, bool | None]]) -> str:
    """JSON object text from ``(key, raw value, is_string)`` pairs.

    ``is_string`` True keeps the value as text, False reads it as JSON, None decides from
    the tool's schema (:func:`mcp_server.families.base.coerce`).
    """
    arguments: dict[str, Any] = {}
    for key, raw, is_string in pairs:
        if is_string is None:
            arguments[key] = coerce(raw, schema_of(tools, function, key))
        else:
            arguments[key] = raw if is_string else coerce(raw, None)
    return json.dumps(arguments, ensure_ascii=False)
