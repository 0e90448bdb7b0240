"""Reading calls written as JSON objects (``{"name": ..., "arguments": {...}}``), shared by the
JSON families (hermes, llama3, mistral v3)."""

from __future__ import annotations

import json
from typing import Any

from mcp_server.families.base import Call, json_arguments

__all__ = ["ARGUMENT_KEYS", "call_of", "decode"]

ARGUMENT_KEYS = ("arguments", "parameters")
"""Where the JSON families put the arguments: Hermes/Qwen write ``arguments``; Llama 3.1's
model card ``parameters`` (and Llama 3.1 also writes ``arguments``)."""


def decode(text: str) -> Any:
    """``json.loads`` that returns a sentinel (``...``) instead of raising."""
    try:
        return json.loads(text)
    except ValueError:
        return ...


def call_of(value: Any) -> Call | None:
    """The call a decoded JSON object describes, or None.

    Keys may come in any order (Hermes 3's prompt asks for ``arguments`` first); keys other
    than the name and the arguments (``"type": "function"``, ``"id"``) are ignored. Arguments
    given as a JSON string holding an object are decoded; missing arguments mean ``{}``.
    """
    if not isinstance(value, dict) or not isinstance(value.get("name"), str):
        return None
    keys = [key for key in ARGUMENT_KEYS if key in value]
    arguments = value[keys[0]] if keys else {}
    if isinstance(arguments, str):
        arguments = decode(arguments)
    text = json_arguments(arguments)
    return None if text is None else Call(value["name"], text)
