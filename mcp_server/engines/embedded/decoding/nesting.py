"""How deep a JSON Schema nests, ``$ref`` chains followed; local ``$ref`` resolution.

Validating an instance recurses once per subschema level (``jsonschema`` and the grammar
compiler alike), and a chain of ``$ref`` forces as many levels of output as it has links:
a 300-link chain made Python's recursion limit fail the final check. :func:`check_nesting`
bounds the levels at :data:`MAX_SCHEMA_NESTING` when a schema is accepted.
"""

from __future__ import annotations

import urllib.parse
from typing import Any

from mcp_server.errors import InvalidRequest

__all__ = ["MAX_SCHEMA_NESTING", "SCHEMA_LISTS", "SCHEMA_VALUES", "check_nesting", "resolve_ref"]

MAX_SCHEMA_NESTING = 48
"""Subschema levels a schema may nest, counted through ``$ref`` (a recursive ``$ref`` counts once)."""

SCHEMA_LISTS = ("prefixItems", "anyOf", "oneOf", "allOf")
"""Keywords whose value is a list of subschemas."""

SCHEMA_VALUES = ("additionalProperties", "items")
"""Keywords whose value is one subschema."""


def check_nesting(root: Any, param: str) -> None:
    """Reject a schema whose subschemas nest deeper than :data:`MAX_SCHEMA_NESTING` levels,
    following ``$ref`` (a ``$ref`` back to a schema being walked, i.e. recursion, counts once).

    Raises:
        InvalidRequest: with ``param``, naming the limit.
    """
    heights: dict[int, int] = {}
    walking: set[int] = set()
    too_deep = InvalidRequest(f"the JSON Schema nests subschemas (through '$ref' too) deeper than "
                              f"{MAX_SCHEMA_NESTING} levels, the most supported", param=param)

    def height(node: Any, level: int) -> int:
        if not isinstance(node, dict) or id(node) in walking:
            return 0
        if id(node) not in heights:
            if level > MAX_SCHEMA_NESTING:
                raise too_deep
            walking.add(id(node))
            heights[id(node)] = 1 + max((height(child, level + 1) for child in _subschemas(node, root)), default=0)
            walking.discard(id(node))
        if level - 1 + heights[id(node)] > MAX_SCHEMA_NESTING:
            raise too_deep
        return heights[id(node)]

    height(root, 1)


def _subschemas(node: dict[str, Any], root: Any) -> list[Any]:
    """The subschemas an instance of ``node`` is checked against one level down, ``$ref`` target included."""
    children: list[Any] = []
    value = node.get("properties")
    if isinstance(value, dict):
        children += value.values()
    for keyword in SCHEMA_LISTS:
        if isinstance(node.get(keyword), list):
            children += node[keyword]
    for keyword in SCHEMA_VALUES:
        if keyword in node:
            children += node[keyword] if isinstance(node[keyword], list) else [node[keyword]]
    ref = node.get("$ref")
    if isinstance(ref, str) and (target := resolve_ref(ref, root)) is not None:
        children.append(target)
    return children


def resolve_ref(ref: str, root: Any) -> Any:
    """The target of a local ``#``/``#/...`` reference inside ``root``, or None."""
    if ref != "#" and not ref.startswith("#/"):
        return None
    target = root
    for part in filter(None, ref[2:].split("/")):
        key = urllib.parse.unquote(part).replace("~1", "/").replace("~0", "~")
        if isinstance(target, list) and key.isdigit() and int(key) < len(target):
            target = target[int(key)]
        elif isinstance(target, dict) and key in target:
            target = target[key]
        else:
            return None
    return target
