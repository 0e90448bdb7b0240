"""Generate the artifacts derived from the capability and the schemas, or check them.

Derived, committed, never edited by hand:

- ``capability/generated/mcp-tools.json``: the MCP tool list (`mcp_tools`);
- ``skills/<name>/...``: each skill of the capability (`mcp_server.generate.skill.render_skill`);
- ``schemas/deployment.json``: the deployment file's schema, from the flag table
  (`mcp_server.deployment.deployment_schema`).

``generate(root)`` writes them; ``generate(root, check=True)`` writes nothing and returns
the files that are missing or stale (the ``chatcap generate --check`` gate)::

    stale = generate(PROJECT_ROOT, check=True)
    assert not stale, f"run `chatcap generate`: {stale}"

MCP tools take names, titles, descriptions and hints from the capability, and their
schemas from ``schemas/`` bundled into standalone documents (`TOOL_SHAPES`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mcp_server.capability.loader import Capability, McpTool, load_capability
from mcp_server.capability.schemas import NO_PARAMETERS, PROJECT_ROOT, bundled_schema
from mcp_server.deployment import SCHEMA_NAME, deployment_schema
from mcp_server.errors import CapabilityError
from mcp_server.generate.skill import render_skill
from mcp_server.protocol.request import UNSUPPORTED

__all__ = [
    "MCP_TOOLS_PATH",
    "TOOL_SHAPES",
    "ToolShape",
    "artifacts",
    "generate",
    "mcp_tools",
]

MCP_TOOLS_PATH = "capability/generated/mcp-tools.json"


@dataclass(frozen=True)
class ToolShape:
    """Which schemas describe a tool's arguments and result.

    Attributes:
        input: schema name of the arguments, or None for a tool without arguments.
        output: schema name of the structured result.
        drop: top-level request properties a tool does not take (MCP results don't stream;
            options the service refuses, :data:`mcp_server.service.UNSUPPORTED`).
    """

    input: str | None
    output: str
    drop: tuple[str, ...] = ()


TOOL_SHAPES: dict[str, ToolShape] = {
    # The service refuses the UNSUPPORTED options, so the tool does not offer them.
    "create-chat-completion": ToolShape(
        "chat-completion-request", "chat-completion-response", drop=("stream", "stream_options", *UNSUPPORTED)
    ),
    "list-models": ToolShape(None, "model-list"),
    "chat": ToolShape("chat-tool-input", "chat-tool-output"),
}
_HINT_FIELDS = (
    ("read_only", "readOnlyHint"),
    ("destructive", "destructiveHint"),
    ("idempotent", "idempotentHint"),
    ("open_world", "openWorldHint"),
)


def mcp_tools(capability: Capability) -> list[dict[str, Any]]:
    """Build the MCP tool definitions, in capability order.

    Args:
        capability: the loaded capability.

    Returns:
        ``[{"name", "title", "description", "inputSchema", "outputSchema", "annotations"}]``
        as ``tools/list`` publishes them; each schema is standalone (its references point
        into its own ``$defs``), and ``annotations`` holds only the hints that are set.

    Raises:
        CapabilityError: a tool has no entry in `TOOL_SHAPES`.
    """
    return [_tool(tool) for tool in capability.tools]


def artifacts(capability: Capability) -> dict[str, str]:
    """Render every generated file.

    Returns:
        File contents keyed by path relative to the project root, sorted by path.

    Raises:
        CapabilityError: as `mcp_tools`.
        KeyError: as `mcp_server.generate.skill.render_skill`.
    """
    files = {
        MCP_TOOLS_PATH: json.dumps(mcp_tools(capability), indent=2, sort_keys=True, ensure_ascii=False) + "\n",
        f"schemas/{SCHEMA_NAME}.json": json.dumps(deployment_schema(), indent=2, ensure_ascii=False) + "\n",
    }
    for skill in capability.skills:
        for relative, text in render_skill(capability, skill).items():
            files[f"skills/{skill.name}/{relative}"] = text if text.endswith("\n") else text + "\n"
    return dict(sorted(files.items()))


def generate(root: Path = PROJECT_ROOT, check: bool = False) -> list[str]:
    """Write the generated artifacts under ``root``, or list the out-of-date ones.

    Args:
        root: the project root (holding ``capability/``, ``schemas/``, ``skills/``); the
            capability is read from ``root/capability/chat-completions.yaml``.
        check: when True, write nothing.

    Returns:
        Paths (relative to ``root``) that were missing or differed: with ``check`` the
        ones that need regenerating, without it the ones just written.

    Raises:
        CapabilityError: the capability is invalid or a tool has no known shape.
    """
    capability = load_capability(root / "capability" / "chat-completions.yaml")
    changed = []
    for relative, text in artifacts(capability).items():
        path = root / relative
        if path.is_file() and path.read_text(encoding="utf-8") == text:
            continue
        changed.append(relative)
        if not check:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8", newline="\n")
            if path.suffix == ".py":
                path.chmod(0o755)
    return changed


def _tool(tool: McpTool) -> dict[str, Any]:
    shape = TOOL_SHAPES.get(tool.name)
    if shape is None:
        raise CapabilityError(f"MCP tool {tool.name!r} has no schemas; known tools: {sorted(TOOL_SHAPES)}")
    annotations = {
        key: getattr(tool.hints, field) for field, key in _HINT_FIELDS if getattr(tool.hints, field) is not None
    }
    return {
        "name": tool.name,
        "title": tool.label or tool.name,
        "description": tool.description,
        "inputSchema": bundled_schema(shape.input, drop=shape.drop) if shape.input else dict(NO_PARAMETERS),
        "outputSchema": bundled_schema(shape.output),
        "annotations": annotations,
    }
