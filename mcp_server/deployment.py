"""A deployment: the models one server serves, each with its own per-model settings.

Given by a YAML file (``chatcap serve --config deployment.yaml``) or by repeating
``--model-path``. The file's shape is ``schemas/deployment.json``, generated from the flag
table (:func:`deployment_schema`, written by ``chatcap generate``): the top level takes every
flag by its field name (``host``, ``port``, ``data_dir``, ``api_key``, ...) and a ``models``
list; each model takes exactly the per-model flags (``model_path``, ``served_model_name``,
``engine``, ``threads``, ``context_length``, ``price``, ``sglang_url``, ``sglang_args``, ...,
those whose :attr:`~mcp_server.settings.Flag.per_model` is true)::

    port: 8000
    threads: 1                       # a per-model flag at the top level: every model's default
    models:
      - {}                           # the bundled SmolLM2-135M-Instruct
      - model_path: /models/smollm2-q8_0.gguf
        served_model_name: smollm2-q8
        max_running_requests: 4
      - engine: sglang
        sglang_url: http://10.0.0.5:30000   # an SGLang server or router, attached

Precedence, lowest first: a field's default, its ``CHATCAP_*`` variable, the file's top
level, a flag on the command line, and (per-model flags) the model's own entry.
"""

from __future__ import annotations

import typing
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import yaml

from mcp_server.capability.schemas import validate
from mcp_server.errors import InvalidRequest
from mcp_server.settings import Flag, Settings

__all__ = ["SCHEMA_NAME", "Deployment", "deployment_schema", "from_model_paths", "load_deployment", "per_model_fields"]

SCHEMA_NAME = "deployment"
"""``schemas/deployment.json``."""

_NOT_IN_FILE = frozenset({"config"})
"""Flags a deployment file cannot set (the file itself)."""


@dataclass(frozen=True)
class Deployment:
    """What one server runs.

    Attributes:
        server: the server-wide settings (its per-model fields are the first model's).
        models: one :class:`~mcp_server.settings.Settings` per model, in order (the first
            is the default model); each holds the server's settings and its own per-model ones.
    """

    server: Settings
    models: tuple[Settings, ...]


def _flags() -> list[tuple[str, Flag]]:
    return [(item.name, item.metadata["flag"]) for item in fields(Settings) if "flag" in item.metadata]


def per_model_fields() -> list[str]:
    """The names of the per-model flags, in table order."""
    return [name for name, flag in _flags() if flag.per_model and name not in _NOT_IN_FILE]


def _property(kind: Any, flag: Flag) -> dict[str, Any]:
    """The JSON Schema of one flag's value, from its field type (``X | None`` allows null)."""
    args = typing.get_args(kind)
    nullable = type(None) in args
    if nullable:
        kind = next(arg for arg in args if arg is not type(None))
    origin = typing.get_origin(kind)
    if flag.switch or kind is bool:
        schema: dict[str, Any] = {"type": "boolean"}
    elif kind is int:
        schema = {"type": "integer"}
    elif kind is float:
        schema = {"type": "number"}
    elif origin is tuple and typing.get_args(kind)[-1] is Ellipsis:  # a list, or its flag's text
        schema = {"type": ["array", "string"], "items": {"type": "string"}}
    elif origin is tuple:
        size = len(typing.get_args(kind))
        schema = {"type": "array", "items": {"type": "number", "minimum": 0}, "minItems": size, "maxItems": size}
    else:
        schema = {"type": "string"}
    if flag.choices:
        schema["enum"] = list(flag.choices)
    if nullable:
        types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        schema["type"] = [*types, "null"]
        if "enum" in schema:
            schema["enum"].append(None)
    return {"description": flag.help, **schema}


def deployment_schema() -> dict[str, Any]:
    """The JSON Schema 2020-12 of a deployment file, generated from the flag table.

    Returns:
        The document ``chatcap generate`` writes to ``schemas/deployment.json``.
    """
    hints = typing.get_type_hints(Settings)
    properties = {
        name: _property(hints[name], flag) for name, flag in _flags() if name not in _NOT_IN_FILE
    }
    model = {name: properties[name] for name in per_model_fields()}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://chatcap.dev/schemas/deployment.json",
        "title": "Deployment",
        "description": (
            "A chatcap deployment file (chatcap serve --config): server-wide flags at the top level "
            "(a per-model flag there is every model's default) and the served models, each with its "
            "per-model flags. Field names are the flags' (--model-path is model_path). Generated from "
            "mcp_server/settings.py by `chatcap generate`."
        ),
        "type": "object",
        "required": ["models"],
        "additionalProperties": False,
        "properties": {
            **properties,
            "models": {
                "description": "The served models; the first is the default for requests that name none.",
                "type": "array",
                "minItems": 1,
                "items": {"$ref": "#/$defs/DeployedModel"},
            },
        },
        "$defs": {
            "DeployedModel": {
                "description": "One served model: where it runs and how, by the per-model flags.",
                "type": "object",
                "additionalProperties": False,
                "properties": model,
            }
        },
    }


def _value(name: str, raw: Any) -> Any:
    """A schema-valid file value as the Settings field holds it (paths, tuples; a list field
    given as text is read as its flag reads it: ``"a,b"`` names, ``"--tp-size 8"`` arguments)."""
    if raw is None:
        return None
    kind = typing.get_type_hints(Settings)[name]
    if Path in typing.get_args(kind) or kind is Path:
        return Path(raw).expanduser()
    if isinstance(raw, list):
        return tuple(float(x) for x in raw) if name == "price" else tuple(str(x) for x in raw)
    if typing.get_origin(kind) is tuple:
        return dict(_flags())[name].value(raw)
    if isinstance(raw, int) and not isinstance(raw, bool) and float in typing.get_args(kind) + (kind,):
        return float(raw)
    return raw


def load_deployment(path: Path, command_line: Settings, given: frozenset[str] = frozenset()) -> Deployment:
    """Read and validate a deployment file.

    Args:
        path: the YAML file.
        command_line: the settings from flags and environment.
        given: the fields set by a flag on the command line (they win over the file's top level).

    Returns:
        The deployment; relative ``model_path`` values are read from the file's folder.

    Raises:
        InvalidRequest: the file cannot be read, is not YAML, or does not match
            ``schemas/deployment.json`` (``param`` names the field, e.g. ``models[1].threads``),
            or two models are served under one id.
    """
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidRequest(f"Cannot read the deployment file {path}: {exc}", param="config") from None
    except yaml.YAMLError as exc:
        raise InvalidRequest(f"The deployment file {path} is not valid YAML: {exc}", param="config") from None
    try:
        validate(SCHEMA_NAME, data)
    except InvalidRequest as exc:
        raise InvalidRequest(f"{path}: {exc.message}", param=exc.param) from None
    top = {name: _value(name, raw) for name, raw in data.items() if name != "models" and name not in given}
    server = replace(command_line, **top)
    models = []
    for entry in data["models"]:
        own = {name: _value(name, raw) for name, raw in entry.items()}
        model_path = own.get("model_path")
        if isinstance(model_path, str) and not Path(model_path).is_absolute() and (path.parent / model_path).exists():
            own["model_path"] = str(path.parent / model_path)
        models.append(replace(server, **own))
    return _checked(Deployment(server, tuple(models)), "models[{}].served_model_name", f"{path}: ")


def from_model_paths(paths: list[str], command_line: Settings) -> Deployment:
    """The deployment of repeated ``--model-path`` flags: one model each, sharing the other flags.

    Raises:
        InvalidRequest: ``--served-model-name`` given with several paths (param
            ``served_model_name``: name each model in a deployment file), or a path given twice.
    """
    if not paths:
        return Deployment(command_line, (command_line,))
    if len(paths) > 1 and command_line.served_model_name:
        raise InvalidRequest(
            "--served-model-name names one model, but --model-path was given several times: "
            "name each model in a deployment file (--config) instead.",
            param="served_model_name",
        )
    models = tuple(replace(command_line, model_path=path) for path in paths)
    return _checked(Deployment(models[0], models), "model_path[{}]")


def _checked(deployment: Deployment, param: str, where: str = "") -> Deployment:
    """Refuse two models whose ids (served name, else model path) are known and equal."""
    seen: dict[str, int] = {}
    for index, model in enumerate(deployment.models):
        names = model.served_model_name or ((model.model_path,) if model.model_path else ())
        if model.engine == "embedded" and not names:
            names = ("<bundled model>",)
        for name in names:
            if name in seen:
                raise InvalidRequest(
                    f"{where}Two models would be served as '{name}' (models {seen[name]} and {index}): give each "
                    "its own served_model_name.",
                    param=param.format(index),
                )
            seen[name] = index
    return deployment
