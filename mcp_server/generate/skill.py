"""The Agent Skill (agentskills.io format) rendered from the capability and the schemas.

For each skill in the capability's ``exposes: skill`` this renders ``skills/<name>/``:

- ``SKILL.md``: front matter (``name``, ``description``, ``license``, ``allowed-tools``)
  from the capability, then when and how to use the service (MCP tools, REST, helper);
- ``references/parameters.md``: the request parameters, built from
  ``schemas/chat-completion-request.json``;
- ``scripts/chat.py``: a stdlib-only helper that POSTs one prompt to the REST endpoint.

`render_skill` returns the files as text; writing them (and checking they are current) is
`mcp_server.generate.tools.generate`. A running server publishes a :class:`SkillCatalog`,
rendered once at start from the capability it serves.
"""

from __future__ import annotations

import io
import json
import re
import zipfile
from pathlib import Path
from typing import Any

import yaml

from mcp_server.capability.loader import Capability, McpTool, Skill
from mcp_server.capability.schemas import PROJECT_ROOT, load_schema

__all__ = ["DEFAULT_BASE_URL", "SKILLS_DIR", "SkillCatalog", "render_skill"]

SKILLS_DIR = PROJECT_ROOT / "skills"
DEFAULT_BASE_URL = "http://127.0.0.1:8000/v1"
_CHAT_OPERATION = "create-chat-completion"
TEMPLATES = Path(__file__).with_name("templates")
"""Files rendered into skills: ``chat.py.template`` (``__BASE_URL__``, ``__CHAT_PATH__``)."""
_SKILL_NAME = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)
_TABLE_HEAD = "| name | type | range / values | default | description |"
_HINTS = (("read_only", "read-only"), ("destructive", "destructive"), ("idempotent", "idempotent"),
          ("open_world", "open-world"))


def render_skill(capability: Capability, skill: Skill) -> dict[str, str]:
    """Render the files of one skill.

    Args:
        capability: the loaded capability (names, descriptions, REST paths).
        skill: one of ``capability.skills``.

    Returns:
        File contents keyed by path relative to ``skills/<skill.name>/``.

    Raises:
        KeyError: a skill tool names an MCP tool the capability does not define, or no
            REST resource serves the ``create-chat-completion`` operation.
    """
    chat_path = _rest_path(capability, _CHAT_OPERATION)
    return {
        "SKILL.md": _skill_md(capability, skill),
        "references/parameters.md": _parameters_md(),
        "scripts/chat.py": (TEMPLATES / "chat.py.template").read_text(encoding="utf-8")
        .replace("__CHAT_PATH__", chat_path.removeprefix("/v1"))
        .replace("__BASE_URL__", DEFAULT_BASE_URL),
    }


class SkillCatalog:
    """The skills a server publishes (``GET /skills``), rendered once from the capability it serves.

    Args:
        capability: the served capability (its ``exposes: skill`` entries).

    Example::

        catalog = SkillCatalog(capability)
        catalog.index()                    # [{"name", "description", "files"}]
        catalog.archive("chat-completions")  # zip bytes
    """

    def __init__(self, capability: Capability):
        self._skills = {skill.name: (skill, render_skill(capability, skill)) for skill in capability.skills}

    def index(self) -> list[dict[str, Any]]:
        """``[{"name", "description", "files": [relative paths, sorted]}]`` in capability order."""
        return [self.entry(name) for name in self._skills]

    def entry(self, name: str) -> dict[str, Any]:
        """One skill's index entry.

        Raises:
            KeyError: no skill is called ``name``; the message lists the known ones.
        """
        skill, files = self._find(name)
        return {"name": skill.name, "description": skill.description, "files": sorted(files)}

    def archive(self, name: str, base_url: str | None = None) -> bytes:
        """Zip the skill's files under a ``<name>/`` folder: deterministic (sorted entries,
        fixed timestamps), ``scripts/`` executable.

        Args:
            name: the skill.
            base_url: the OpenAI base URL of the server that serves the archive
                (``http://host:port/v1``): it replaces :data:`DEFAULT_BASE_URL` in every file,
                so ``SKILL.md`` names it and ``scripts/chat.py`` calls it unless
                ``CHATCAP_BASE_URL`` says otherwise. None keeps the default.

        Raises:
            KeyError: no skill is called ``name``.
        """
        _, files = self._find(name)
        if base_url is not None:
            files = {path: text.replace(DEFAULT_BASE_URL, base_url) for path, text in files.items()}
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            for relative in sorted(files):
                entry = zipfile.ZipInfo(f"{name}/{relative}", _ZIP_EPOCH)
                entry.external_attr = (0o755 if relative.startswith("scripts/") else 0o644) << 16
                entry.compress_type = zipfile.ZIP_DEFLATED
                archive.writestr(entry, files[relative].encode("utf-8"))
        return buffer.getvalue()

    def _find(self, name: str) -> tuple[Skill, dict[str, str]]:
        if name not in self._skills:
            raise KeyError(f"unknown skill {name!r}; known skills: {sorted(self._skills)}")
        return self._skills[name]


def _rest_path(capability: Capability, operation: str) -> str:
    for resource in capability.resources:
        if any(op.name == operation for op in resource.operations):
            return resource.path
    raise KeyError(f"no REST resource serves operation {operation!r}")


def _skill_md(capability: Capability, skill: Skill) -> str:
    front = {"name": skill.name, "description": skill.description}
    if skill.license:
        front["license"] = skill.license
    if skill.allowed_tools:
        front["allowed-tools"] = skill.allowed_tools
    front["metadata"] = {"generated-from": "capability/chat-completions.yaml"}
    tools = [capability.tool(t.action or t.name) for t in skill.tools]
    rest = "\n".join(
        f"| `{op.method} {resource.path}` | {resource.description or ''} |"
        for resource in capability.resources
        for op in resource.operations
    )
    return "\n".join([
        "---",
        yaml.safe_dump(front, sort_keys=False, allow_unicode=True, width=1000).strip(),
        "---",
        "",
        f"# {capability.info.label}",
        "",
        "<!-- Generated from capability/chat-completions.yaml and schemas/ by `chatcap generate`. Do not edit. -->",
        "",
        capability.info.description,
        "",
        "## When to use",
        "",
        "- You need text from an open LLM that this server hosts (a second opinion, a local or private model).",
        "- You need JSON that is guaranteed to match a JSON Schema (extraction, classification, forms):",
        "  decoding is grammar-constrained, so the output always parses and validates.",
        "- You need a model to choose and fill tool calls whose arguments must match their schemas.",
        "",
        "Do not use it for facts that need live data: the model knows only its training data.",
        "",
        "## MCP tools",
        "",
        *[line for tool in tools for line in _tool_section(tool)],
        "## REST (OpenAI-compatible)",
        "",
        f"Base URL `{DEFAULT_BASE_URL}` unless told otherwise (`CHATCAP_BASE_URL`); send",
        "`Authorization: Bearer $CHATCAP_API_KEY` when the server requires a key.",
        "",
        "| endpoint | purpose |",
        "|---|---|",
        rest,
        "",
        "Any OpenAI SDK works unchanged:",
        "",
        "```python",
        "from openai import OpenAI",
        "",
        f'client = OpenAI(base_url="{DEFAULT_BASE_URL}", api_key="unused-or-your-key")',
        "answer = client.chat.completions.create(",
        '    model=client.models.list().data[0].id,',
        '    messages=[{"role": "user", "content": "Name three primes."}],',
        '    response_format={"type": "json_schema", "json_schema": {"name": "primes", "schema": {',
        '        "type": "object", "properties": {"primes": {"type": "array", "items": {"type": "integer"}}},',
        '        "required": ["primes"]}}},',
        ")",
        "print(answer.choices[0].message.content)  # always valid against the schema",
        "```",
        "",
        "Or run the helper (stdlib only): `python scripts/chat.py \"your question\"`;",
        "`--schema schema.json` for structured output, `--raw` for the whole completion.",
        "",
        "## Tips",
        "",
        "- Structured output: `response_format` `{\"type\": \"json_schema\", \"json_schema\": {\"name\", \"schema\"}}`;",
        "  `{\"type\": \"json_object\"}` for any JSON object.",
        "- Tool calling: pass `tools` and optionally `tool_choice` (`auto`, `required`, `none` or",
        "  `{\"type\": \"function\", \"function\": {\"name\": ...}}`). When `finish_reason` is `tool_calls`, run",
        "  the calls, append the assistant message and one `tool` message per call (`tool_call_id`), ask again.",
        "- Reasoning models return their thinking in `message.reasoning_content`, apart from `content`.",
        "- `finish_reason: length` means the answer was cut by `max_tokens` or the context size.",
        "- Errors use the OpenAI envelope; a 400's `error.param` names the field at fault",
        "  (e.g. `messages[0].role`), a 404 means an unknown model (list them first).",
        "- All request parameters, with types and ranges: [references/parameters.md](references/parameters.md).",
        "",
    ])


def _tool_section(tool: McpTool) -> list[str]:
    hints = [label for field, label in _HINTS if getattr(tool.hints, field)]
    return [
        f"### `{tool.name}`{f' ({tool.label})' if tool.label else ''}",
        "",
        tool.description,
        "",
        *([f"Hints: {', '.join(hints)}.", ""] if hints else []),
    ]


def _parameters_md() -> str:
    request = load_schema("chat-completion-request")
    defs = request["$defs"]
    lines = [
        "# Chat-completion request parameters",
        "",
        "<!-- Generated from schemas/chat-completion-request.json by `chatcap generate`. Do not edit. -->",
        "",
        f"{request['description']} Required: {', '.join(f'`{k}`' for k in request['required'])}.",
        "",
    ]
    sections = [("Request body", request), ("Message (`messages[]`)", defs["ChatMessage"]),
                ("Content part (`messages[].content[]`)", defs["ContentPart"]),
                ("Tool (`tools[]`)", defs["FunctionDefinition"]),
                ("Response format (`response_format`)", defs["ResponseFormat"]),
                ("JSON Schema format (`response_format.json_schema`)", defs["JsonSchemaFormat"]),
                ("Stream options (`stream_options`)", defs["StreamOptions"])]
    for title, schema in sections:
        lines += [f"## {title}", "", _TABLE_HEAD, "|---|---|---|---|---|"]
        for name, prop in schema["properties"].items():
            kind, limits, description = _summary(prop, defs)
            default = f"`{_json(prop['default'])}`" if "default" in prop else ""
            required = " (required)" if name in schema.get("required", ()) else ""
            lines.append(f"| `{name}`{required} | {kind} | {limits} | {default} | {_cell(description)} |")
        lines.append("")
    return "\n".join(lines)


def _summary(prop: dict[str, Any], defs: dict[str, Any]) -> tuple[str, str, str]:
    """Return (type, range or values, description) of one property, following refs and unions."""
    description = prop.get("description", "")
    if "$ref" in prop:
        prop = {**defs[prop["$ref"].rsplit("/", 1)[-1]], **{k: v for k, v in prop.items() if k != "$ref"}}
        description = description or prop.get("description", "")
    branches = [defs[b["$ref"].rsplit("/", 1)[-1]] if "$ref" in b else b for b in prop.get("anyOf", [prop])]
    types: list[str] = []
    limits: list[str] = []
    for branch in branches:
        kinds = branch.get("type", "any")
        for kind in kinds if isinstance(kinds, list) else [kinds]:
            if kind not in types:
                types.append(kind)
        limits += _limits(branch)
    return " \\| ".join(types), ", ".join(limits), description


def _limits(schema: dict[str, Any]) -> list[str]:
    words = {"minimum": "≥ {}", "exclusiveMinimum": "> {}", "maximum": "≤ {}", "exclusiveMaximum": "< {}",
             "minItems": "≥ {} item(s)", "maxItems": "≤ {} items", "minLength": "≥ {} chars",
             "pattern": "`{}`"}
    found = [template.format(schema[key]) for key, template in words.items() if key in schema]
    if "enum" in schema:
        found.append(" \\| ".join(f"`{_json(v)}`" for v in schema["enum"] if v is not None))
    if "const" in schema:
        found.append(f"`{_json(schema['const'])}`")
    return found


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")
