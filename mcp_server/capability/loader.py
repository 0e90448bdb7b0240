"""Load the Naftiko capability (``capability/chat-completions.yaml``) into frozen data.

The capability is the single source of names: MCP tool names, titles, descriptions and
hints, the skill's name and description, and the REST paths. `load_capability` checks the
file against the shipped Naftiko alpha3 JSON Schema on every load, so a broken file fails
at start-up with the path inside the file that is wrong::

    capability = load_capability()
    [tool.name for tool in capability.tools]   # ['create-chat-completion', 'list-models', 'chat']
    capability.skills[0].description

Only the ``exposes`` types this service serves (``rest``, ``mcp``, ``skill``, at most one
of each: they share one server) and the ``http`` consumer are understood; any other type,
or a second adapter of one type, is an error, never skipped.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator

from mcp_server.capability.schemas import PROJECT_ROOT, format_path, most_specific_error
from mcp_server.errors import CapabilityError

__all__ = [
    "CAPABILITY_PATH",
    "MCP_PATH",
    "NAFTIKO_SCHEMA_PATH",
    "Capability",
    "ConsumedOperation",
    "Consumes",
    "Info",
    "McpExposure",
    "McpTool",
    "RestExposure",
    "RestOperation",
    "RestResource",
    "Skill",
    "SkillExposure",
    "SkillTool",
    "ToolHints",
    "load_capability",
]

CAPABILITY_PATH = PROJECT_ROOT / "capability" / "chat-completions.yaml"
NAFTIKO_SCHEMA_PATH = PROJECT_ROOT / "capability" / "naftiko-schema-1.0.0-alpha3.json"


MCP_PATH = "/mcp"
"""Where an ``mcp`` adapter is served over streamable HTTP (the MCP specification's usual endpoint)."""


@dataclass(frozen=True)
class Info:
    """The capability's human-readable metadata."""

    label: str
    description: str
    tags: tuple[str, ...] = ()


@dataclass(frozen=True)
class ConsumedOperation:
    """One operation of the consumed runtime API, e.g. ``POST /v1/chat/completions``."""

    name: str
    method: str
    path: str


@dataclass(frozen=True)
class Consumes:
    """An HTTP API the capability calls (the inference runtime)."""

    namespace: str
    base_uri: str
    operations: tuple[ConsumedOperation, ...]


@dataclass(frozen=True)
class RestOperation:
    """One exposed REST operation; ``call`` is ``namespace.operation`` or None (served locally)."""

    name: str
    method: str
    label: str | None
    call: str | None


@dataclass(frozen=True)
class RestResource:
    """One exposed REST path and its operations."""

    name: str
    path: str
    label: str | None
    description: str | None
    operations: tuple[RestOperation, ...]


@dataclass(frozen=True)
class RestExposure:
    """A ``type: rest`` entry of ``exposes``."""

    namespace: str
    address: str | None
    port: int
    resources: tuple[RestResource, ...]


@dataclass(frozen=True)
class ToolHints:
    """MCP tool annotations; None where the capability leaves a hint unset."""

    read_only: bool | None = None
    destructive: bool | None = None
    idempotent: bool | None = None
    open_world: bool | None = None


@dataclass(frozen=True)
class McpTool:
    """One MCP tool: its name, title (``label``), description and hints."""

    name: str
    label: str | None
    description: str
    hints: ToolHints
    call: str | None


@dataclass(frozen=True)
class McpExposure:
    """A ``type: mcp`` entry of ``exposes``."""

    namespace: str
    transport: str
    address: str | None
    port: int | None
    description: str | None
    tools: tuple[McpTool, ...]


@dataclass(frozen=True)
class SkillTool:
    """A tool a skill declares: taken from an adapter (``source_namespace.action``) or an instruction file."""

    name: str
    description: str
    source_namespace: str | None
    action: str | None
    instruction: str | None


@dataclass(frozen=True)
class Skill:
    """One Agent Skill with its front-matter fields."""

    name: str
    description: str
    license: str | None
    allowed_tools: str | None
    tools: tuple[SkillTool, ...]


@dataclass(frozen=True)
class SkillExposure:
    """A ``type: skill`` entry of ``exposes``."""

    namespace: str
    address: str | None
    port: int
    description: str | None
    skills: tuple[Skill, ...]


Exposure = RestExposure | McpExposure | SkillExposure


@dataclass(frozen=True)
class Capability:
    """The parsed capability: metadata, what it consumes and what it exposes, by type.

    Attributes:
        path: the file it was loaded from.
        rest, mcp, skill: the adapter of that type, or None when the file has none.
    """

    path: Path
    info: Info
    consumes: tuple[Consumes, ...]
    rest: RestExposure | None
    mcp: McpExposure | None
    skill: SkillExposure | None

    @property
    def tools(self) -> tuple[McpTool, ...]:
        """The MCP tools, in file order (empty without an ``mcp`` adapter)."""
        return self.mcp.tools if self.mcp else ()

    @property
    def skills(self) -> tuple[Skill, ...]:
        """The skills, in file order (empty without a ``skill`` adapter)."""
        return self.skill.skills if self.skill else ()

    @property
    def resources(self) -> tuple[RestResource, ...]:
        """The REST resources, in file order (empty without a ``rest`` adapter)."""
        return self.rest.resources if self.rest else ()

    @property
    def rest_paths(self) -> dict[str, str]:
        """REST operation name -> path, e.g. ``{"list-models": "/v1/models", ...}``."""
        return {op.name: resource.path for resource in self.resources for op in resource.operations}

    @property
    def api_paths(self) -> frozenset[str]:
        """The paths that reach the inference API: every REST path one of whose operations
        has a ``call``, and :data:`MCP_PATH` when an ``mcp`` adapter is exposed over HTTP.
        They need an API key and are counted by name in the HTTP metrics."""
        paths = {r.path for r in self.resources if any(op.call for op in r.operations)}
        if self.mcp is not None:
            paths.add(MCP_PATH)
        return frozenset(paths)

    def tool(self, name: str) -> McpTool:
        """Return the MCP tool called ``name``.

        Raises:
            KeyError: no such tool.
        """
        for tool in self.tools:
            if tool.name == name:
                return tool
        raise KeyError(f"no MCP tool named {name!r}; known: {[t.name for t in self.tools]}")


def load_capability(path: Path | str | None = None) -> Capability:
    """Read, validate and parse a Naftiko capability file.

    Args:
        path: the YAML file; default `CAPABILITY_PATH`.

    Returns:
        The frozen `Capability`.

    Raises:
        CapabilityError: the file is unreadable, is not valid against the Naftiko alpha3
            schema (the message starts with the failing path, e.g.
            ``capability.exposes[1].tools[0].name: ...``), uses an ``exposes`` or
            ``consumes`` type this service does not serve, or exposes one type twice.
    """
    path = Path(path) if path is not None else CAPABILITY_PATH
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise CapabilityError(f"cannot read capability {path}: {exc}") from exc
    error = most_specific_error(_naftiko_validator().iter_errors(document))
    if error is not None:
        where = format_path(error.absolute_path) or "(document)"
        raise CapabilityError(f"{where}: {error.message[:500]} (in {path})")
    body = document["capability"]
    exposes: dict[str, Any] = {}
    for index, entry in enumerate(body.get("exposes", [])):
        kind = entry["type"]
        where = f"capability.exposes[{index}].type"
        if kind not in _EXPOSES:
            raise CapabilityError(f"{where}: {kind!r} is not served here; expected one of {sorted(_EXPOSES)} (in {path})")
        if kind in exposes:
            raise CapabilityError(f"{where}: a second {kind!r} adapter; one server serves at most one (in {path})")
        exposes[kind] = _EXPOSES[kind](entry)
    return Capability(
        path=path,
        info=Info(
            label=document["info"]["label"],
            description=document["info"]["description"].strip(),
            tags=tuple(document["info"].get("tags", ())),
        ),
        consumes=tuple(_consumes(entry, index, path) for index, entry in enumerate(body.get("consumes", []))),
        rest=exposes.get("rest"),
        mcp=exposes.get("mcp"),
        skill=exposes.get("skill"),
    )


@functools.cache
def _naftiko_validator() -> Draft202012Validator:
    schema = json.loads(NAFTIKO_SCHEMA_PATH.read_text(encoding="utf-8"))
    return Draft202012Validator(schema)


def _consumes(entry: dict[str, Any], index: int, path: Path) -> Consumes:
    if entry.get("type") != "http":
        raise CapabilityError(f"capability.consumes[{index}]: only inline type http is supported (in {path})")
    return Consumes(
        namespace=entry["namespace"],
        base_uri=entry["baseUri"],
        operations=tuple(
            ConsumedOperation(name=op["name"], method=op["method"], path=resource["path"])
            for resource in entry.get("resources", [])
            for op in resource["operations"]
        ),
    )


def _rest(entry: dict[str, Any]) -> RestExposure:
    return RestExposure(
        namespace=entry["namespace"],
        address=entry.get("address"),
        port=entry["port"],
        resources=tuple(
            RestResource(
                name=resource.get("name", resource["path"]),
                path=resource["path"],
                label=resource.get("label"),
                description=_text(resource.get("description")),
                operations=tuple(
                    RestOperation(
                        name=op.get("name", op["method"].lower()),
                        method=op["method"],
                        label=op.get("label"),
                        call=op.get("call"),
                    )
                    for op in resource.get("operations", [])
                ),
            )
            for resource in entry.get("resources", [])
        ),
    )


def _mcp(entry: dict[str, Any]) -> McpExposure:
    return McpExposure(
        namespace=entry["namespace"],
        transport=entry.get("transport", "http"),
        address=entry.get("address"),
        port=entry.get("port"),
        description=_text(entry.get("description")),
        tools=tuple(
            McpTool(
                name=tool["name"],
                label=tool.get("label"),
                description=tool["description"].strip(),
                hints=ToolHints(
                    read_only=tool.get("hints", {}).get("readOnly"),
                    destructive=tool.get("hints", {}).get("destructive"),
                    idempotent=tool.get("hints", {}).get("idempotent"),
                    open_world=tool.get("hints", {}).get("openWorld"),
                ),
                call=tool.get("call"),
            )
            for tool in entry["tools"]
        ),
    )


def _skill(entry: dict[str, Any]) -> SkillExposure:
    return SkillExposure(
        namespace=entry["namespace"],
        address=entry.get("address"),
        port=entry["port"],
        description=_text(entry.get("description")),
        skills=tuple(
            Skill(
                name=skill["name"],
                description=skill["description"].strip(),
                license=skill.get("license"),
                allowed_tools=skill.get("allowed-tools"),
                tools=tuple(
                    SkillTool(
                        name=tool["name"],
                        description=tool["description"].strip(),
                        source_namespace=tool.get("from", {}).get("sourceNamespace"),
                        action=tool.get("from", {}).get("action"),
                        instruction=tool.get("instruction"),
                    )
                    for tool in skill.get("tools", [])
                ),
            )
            for skill in entry["skills"]
        ),
    )


def _text(value: str | None) -> str | None:
    return value.strip() if value is not None else None


_EXPOSES: dict[str, Callable[[dict[str, Any]], Exposure]] = {"rest": _rest, "mcp": _mcp, "skill": _skill}
