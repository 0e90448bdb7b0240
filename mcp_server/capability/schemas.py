"""The JSON Schemas in ``schemas/``: loading, validation with named fields, bundling.

``schemas/`` is the single source of shapes. It lives under :data:`PROJECT_ROOT`: the
source tree (``<repo>/schemas``, next to ``mcp_server/``) in a checkout or an editable
install, and ``mcp_server/data/`` in an installed wheel, where the build (``setup.py``)
copies ``schemas/``, ``capability/`` and ``skills/``.

Usage::

    from mcp_server.capability.schemas import validate_request, bundled_schema, openapi_document

    validate_request(body)                       # raises InvalidRequest(param="temperature")
    tool_input = bundled_schema("chat-completion-request", drop=("stream",))
    doc = openapi_document()                     # served at GET /openapi.json

Each schema file has an ``$id`` under ``https://chatcap.dev/schemas/`` and refers to the
others by relative file name (``chat-completion-response.json#/$defs/Usage``). Bundling
rewrites those references to one flat namespace (``#/$defs/<Name>`` or
``#/components/schemas/<Name>``): a file's root takes its ``title``, a definition keeps
its ``$defs`` key, and two different schemas wanting one name is an error.
"""

from __future__ import annotations

import copy
import functools
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError, best_match
from referencing import Registry, Resource

from mcp_server.errors import CapabilityError, InvalidRequest

__all__ = [
    "NO_PARAMETERS",
    "PROJECT_ROOT",
    "SCHEMAS_DIR",
    "bundled_schema",
    "format_path",
    "load_schema",
    "most_specific_error",
    "openapi_document",
    "schema_names",
    "validate",
    "validate_instance",
    "validate_request",
]

_PACKAGE_DATA = Path(__file__).resolve().parents[1] / "data"
PROJECT_ROOT = _PACKAGE_DATA if _PACKAGE_DATA.is_dir() else Path(__file__).resolve().parents[2]
"""The folder holding ``schemas/``, ``capability/`` and ``skills/``: the package's ``data/``
in an installed wheel, else the source tree."""

NO_PARAMETERS: dict[str, Any] = {"type": "object", "properties": {}, "additionalProperties": False}
"""The parameters of a function or MCP tool that takes none: exactly the empty object (OpenAI:
a function tool without ``parameters`` has an empty parameter list). Copy before changing."""
SCHEMAS_DIR = PROJECT_ROOT / "schemas"
_REQUEST = "chat-completion-request"
_UNION_KEYWORDS = frozenset({"anyOf", "oneOf"})
# In a union, the branches whose type or discriminator does not match are noise.
_BRANCH_MISMATCH = frozenset({"type", "const", "anyOf", "oneOf"})


def schema_names() -> list[str]:
    """Return the names of all schema files, without ``.json``, sorted."""
    return sorted(path.stem for path in SCHEMAS_DIR.glob("*.json"))


def load_schema(name: str) -> dict[str, Any]:
    """Return a copy of one schema file.

    Args:
        name: file name with or without ``.json``, e.g. ``"chat-completion-request"``.

    Returns:
        The parsed JSON Schema (a fresh copy the caller may change).

    Raises:
        CapabilityError: no such schema file.
    """
    return copy.deepcopy(_load(name.removesuffix(".json")))


def validate(schema_name: str, instance: Any) -> None:
    """Validate ``instance`` against one schema.

    Args:
        schema_name: a name from `schema_names`.
        instance: the decoded JSON value.

    Raises:
        InvalidRequest: the instance does not match; ``param`` is the path of the field
            at fault (``messages[0].role``), or None when the whole value is wrong.
        CapabilityError: no such schema file.
    """
    _check(_validator(schema_name.removesuffix(".json")), instance)


def validate_instance(schema: dict[str, Any], instance: Any) -> None:
    """Validate ``instance`` against a standalone schema, e.g. a tool's ``inputSchema``.

    Args:
        schema: a self-contained JSON Schema 2020-12 (references only into itself).
        instance: the decoded JSON value.

    Raises:
        InvalidRequest: as `validate`.
    """
    _check(Draft202012Validator(schema), instance)


def validate_request(body: Any) -> None:
    """Validate a chat-completions request body (``schemas/chat-completion-request.json``).

    Args:
        body: the decoded JSON body of ``POST /v1/chat/completions``.

    Raises:
        InvalidRequest: with ``param`` naming the field and a message naming the rule,
            e.g. param ``messages[0].role`` for an unknown role.
    """
    validate(_REQUEST, body)


def most_specific_error(errors: Iterable[ValidationError]) -> ValidationError | None:
    """Pick the error that best explains a failure, or None when there is none.

    Starts from `jsonschema.exceptions.best_match`; when that is an ``anyOf``/``oneOf``
    failure it descends into the branches, preferring the deepest instance path and,
    at equal depth, an error that is not a mere type or discriminator mismatch.
    """
    best = best_match(errors)
    while best is not None and best.validator in _UNION_KEYWORDS and best.context:
        best = max(
            best.context,
            key=lambda e: (len(e.absolute_path), e.validator not in _BRANCH_MISMATCH),
        )
    return best


def format_path(path: Iterable[str | int]) -> str:
    """Render a JSON path as ``messages[0].content``; the empty path is ``""``."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def bundled_schema(name: str, *, drop: Sequence[str] = ()) -> dict[str, Any]:
    """Return one schema made self-contained: every reference points into its ``$defs``.

    Args:
        name: a name from `schema_names`.
        drop: top-level properties to remove first (e.g. ``("stream", "stream_options")``).

    Returns:
        The schema without ``$id``/``$schema``, with the definitions it reaches (its own
        and other files') under ``$defs`` and its ``$ref``s rewritten to ``#/$defs/<Name>``.

    Raises:
        CapabilityError: a reference cannot be bundled or two definitions share a name.
    """
    root = _load(name)
    trimmed = {key: value for key, value in root.items() if key not in ("$id", "$schema", "$defs")}
    if "properties" in root:
        trimmed["properties"] = {k: v for k, v in root["properties"].items() if k not in drop}
    if "required" in root:
        trimmed["required"] = [k for k in root["required"] if k not in drop]
    bundle = _Bundle("#/$defs/")
    result = bundle.rewrite(trimmed, name)
    defs = bundle.close()
    if defs:
        result["$defs"] = defs
    return result


def openapi_document() -> dict[str, Any]:
    """Return the OpenAPI 3.1 document (``schemas/openapi.yaml``), self-contained.

    Every schema file is placed under ``components/schemas`` (by its ``title``) together
    with the definitions they use, and all ``$ref``s point there.

    Raises:
        CapabilityError: the document or a schema cannot be bundled.
    """
    return copy.deepcopy(_openapi())


@functools.cache
def _openapi() -> dict[str, Any]:
    document = yaml.safe_load((SCHEMAS_DIR / "openapi.yaml").read_text(encoding="utf-8"))
    bundle = _Bundle("#/components/schemas/")
    document = bundle.rewrite(document, None)
    for name in schema_names():
        bundle.target(name, None)
    document.setdefault("components", {})["schemas"] = dict(sorted(bundle.close().items()))
    return document


class _Bundle:
    """Rewrites cross-file references into one flat definitions namespace."""

    def __init__(self, prefix: str):
        self.prefix = prefix
        self.pending: list[tuple[str, str | None]] = []
        self.owners: dict[str, tuple[str, str | None]] = {}
        self.done: dict[str, Any] = {}

    def rewrite(self, node: Any, base: str | None) -> Any:
        """Copy ``node``, pointing each ``$ref`` (relative to file ``base``) into the namespace."""
        if isinstance(node, list):
            return [self.rewrite(item, base) for item in node]
        if not isinstance(node, dict):
            return node
        out = {key: self.rewrite(value, base) for key, value in node.items() if key != "$ref"}
        ref = node.get("$ref")
        if isinstance(ref, str):
            out["$ref"] = self._ref(ref, base)
        return out

    def _ref(self, ref: str, base: str | None) -> str:
        target, _, pointer = ref.partition("#")
        if not target and base is None:
            return ref  # a local OpenAPI reference such as #/components/responses/...
        name = target.removesuffix(".json") if target else base
        if pointer and not pointer.startswith("/$defs/"):
            raise CapabilityError(f"schema {base}: cannot bundle reference {ref!r}")
        return self.prefix + self.target(name, pointer.removeprefix("/$defs/") or None)

    def target(self, name: str, definition: str | None) -> str:
        """Schedule the root (``definition`` None) or a definition of a file; return its flat name."""
        flat = definition or _load(name).get("title") or name
        owner = self.owners.setdefault(flat, (name, definition))
        if owner != (name, definition):
            raise CapabilityError(f"schemas {owner[0]} and {name} both define {flat!r}")
        if flat not in self.done and (name, definition) not in self.pending:
            self.pending.append((name, definition))
        return flat

    def close(self) -> dict[str, Any]:
        """Copy every scheduled definition (and what it reaches); return them by flat name."""
        while self.pending:
            name, definition = self.pending.pop()
            schema = _load(name)
            if definition is None:
                node = {k: v for k, v in schema.items() if k not in ("$id", "$schema", "$defs")}
            elif definition in schema.get("$defs", {}):
                node = schema["$defs"][definition]
            else:
                raise CapabilityError(f"schema {name} has no $defs/{definition}")
            flat = definition or schema.get("title") or name
            self.done[flat] = None  # reserve before recursing into self-references
            self.done[flat] = self.rewrite(node, name)
        return self.done


@functools.cache
def _load(name: str) -> dict[str, Any]:
    path = SCHEMAS_DIR / f"{name}.json"
    if not path.is_file():
        raise CapabilityError(f"no schema named {name!r} in {SCHEMAS_DIR}")
    schema = json.loads(path.read_text(encoding="utf-8"))
    Draft202012Validator.check_schema(schema)
    return schema


@functools.cache
def _registry() -> Registry:
    resources = [(_load(n)["$id"], Resource.from_contents(_load(n))) for n in schema_names()]
    return Registry().with_resources(resources)


@functools.cache
def _validator(name: str) -> Draft202012Validator:
    return Draft202012Validator(_load(name), registry=_registry())


def _check(validator: Draft202012Validator, instance: Any) -> None:
    error = most_specific_error(validator.iter_errors(instance))
    if error is not None:
        param, message = _describe(error)
        raise InvalidRequest(message, param=param)


def _describe(error: ValidationError) -> tuple[str | None, str]:
    """Return ``(param, message)`` for one validation error."""
    path = list(error.absolute_path)
    value, schema, rule = error.instance, error.schema, error.validator_value
    if error.validator == "required":
        missing = next(key for key in rule if key not in value)
        param = format_path([*path, missing])
        return param, f"Missing required parameter: '{param}'."
    extra = sorted(set(value) - set(schema.get("properties", {}))) if error.validator == "additionalProperties" else []
    if extra:
        param = format_path([*path, extra[0]])
        return param, f"Unrecognized parameter: '{param}'."
    param = format_path(path) or None
    where = f"Invalid value for '{param}'" if param else "Invalid request body"
    rules = {
        "enum": lambda: f"must be one of {', '.join(map(json.dumps, rule))}; got {json.dumps(value)}",
        "const": lambda: f"must be {json.dumps(rule)}; got {json.dumps(value)}",
        "type": lambda: f"must be of type {' or '.join(rule) if isinstance(rule, list) else rule}",
        "minimum": lambda: f"must be >= {rule}; got {value}",
        "maximum": lambda: f"must be <= {rule}; got {value}",
        "exclusiveMinimum": lambda: f"must be > {rule}; got {value}",
        "exclusiveMaximum": lambda: f"must be < {rule}; got {value}",
        "minItems": lambda: f"must have at least {rule} item(s); got {len(value)}",
        "maxItems": lambda: f"must have at most {rule} items; got {len(value)}",
        "minLength": lambda: f"must be at least {rule} character(s) long",
        "pattern": lambda: f"must match the pattern {rule}",
    }
    detail = rules[error.validator]() if error.validator in rules else error.message[:300]
    return param, f"{where}: {detail}."
