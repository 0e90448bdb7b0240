"""MCP resources, resource templates and argument completion for the MCP surface.

What is addressable by name is a resource and, by its name, a resource template:

- ``chatcap://capability/<file>``: the capability file;
- ``chatcap://schemas/{name}``: each JSON Schema in ``schemas/`` (``name`` = file name);
- ``chatcap://skills/{skill}/{path}``: each file of each skill (``path`` below the skill);
- ``chatcap://models/{model}``: the OpenAI model object of each served model (the id is
  percent-encoded: ids hold ``/``).

``completion/complete`` offers the values of those parameters, and of the ``model``
argument the tools take (MCP references only prompts and resource templates, so a
``model`` argument is completed whatever the reference).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import mcp_types as types

__all__ = ["ResourceCatalog"]

_MIME = {".json": "application/schema+json", ".md": "text/markdown", ".yaml": "application/yaml", ".py": "text/x-python"}
TEMPLATES = [
    types.ResourceTemplate(
        name="schema", title="JSON Schema", uri_template="chatcap://schemas/{name}",
        description="A JSON Schema of the API by file name, e.g. chat-completion-request.json.",
        mime_type="application/schema+json",
    ),
    types.ResourceTemplate(
        name="skill-file", title="Agent Skill file", uri_template="chatcap://skills/{skill}/{path}",
        description="A file of an Agent Skill, e.g. skill chat-completions, path SKILL.md.",
    ),
    types.ResourceTemplate(
        name="model", title="Served model", uri_template="chatcap://models/{model}",
        description="The OpenAI model object of a served model (its id percent-encoded).",
        mime_type="application/json",
    ),
]
"""The resource templates, as ``resources/templates/list`` publishes them."""

COMPLETION_LIMIT = 100
"""At most this many values per ``completion/complete`` answer (the MCP limit)."""


@dataclass(frozen=True)
class _Entry:
    resource: types.Resource
    read: Callable[[], str]


class ResourceCatalog:
    """Every resource the MCP surface serves, and the completion of template parameters.

    Args:
        root: the folder holding ``schemas/`` and ``skills/``.
        capability_path: the capability file.
        model_objects: returns the OpenAI model objects (``{"id", "object", ...}``) served now.
    """

    def __init__(self, root: Path, capability_path: Path, model_objects: Callable[[], list[dict[str, Any]]]):
        self._model_objects = model_objects
        files = [(f"capability/{capability_path.name}", capability_path)]
        files += [(f"schemas/{p.name}", p) for p in sorted((root / "schemas").glob("*.json"))]
        files += [
            (p.relative_to(root).as_posix(), p)
            for p in sorted((root / "skills").glob("*/**/*"))
            if p.is_file() and "__pycache__" not in p.parts
        ]
        self._files = {rel: path for rel, path in files}

    def _entries(self) -> dict[str, _Entry]:
        entries = {}
        for rel, path in self._files.items():
            kind = rel.split("/", 1)[0].rstrip("s")
            resource = types.Resource(
                name=rel, title=f"{kind}: {rel}", uri=f"chatcap://{rel}", mime_type=_MIME.get(path.suffix, "text/plain")
            )
            entries[rel] = _Entry(resource, lambda path=path: path.read_text(encoding="utf-8"))
        for model in self._model_objects():
            resource = types.Resource(
                name=f"models/{model['id']}", title=f"model: {model['id']}",
                uri=f"chatcap://models/{quote(model['id'], safe='')}", mime_type="application/json",
            )
            entries[f"models/{model['id']}"] = _Entry(resource, lambda model=model: json.dumps(model, indent=2))
        return entries

    def list(self) -> list[types.Resource]:
        """All resources, for ``resources/list``."""
        return [entry.resource for entry in self._entries().values()]

    def read(self, uri: str) -> types.TextResourceContents | None:
        """The contents of ``uri`` (percent-encoding undone), or None when nothing has that URI."""
        prefix = "chatcap://"
        if not uri.startswith(prefix):
            return None
        entry = self._entries().get(unquote(uri[len(prefix):]))
        if entry is None:
            return None
        return types.TextResourceContents(uri=uri, mime_type=entry.resource.mime_type, text=entry.read())

    def complete(self, argument: str, value: str, context: dict[str, str] | None = None) -> types.Completion:
        """Values for one template parameter or tool argument that start with ``value``.

        Args:
            argument: ``name`` (schema), ``skill``, ``path`` (a skill's files; narrowed by
                ``context["skill"]``), or ``model``; other names get no values.
            value: what the user typed so far.
            context: arguments already filled in (``completion/complete``'s ``context``).
        """
        context = context or {}
        if argument == "model":
            candidates = [m["id"] for m in self._model_objects()]
        elif argument == "name":
            candidates = [rel.split("/", 1)[1] for rel in self._files if rel.startswith("schemas/")]
        else:
            skills = [rel.split("/", 2)[1:] for rel in self._files if rel.startswith("skills/")]
            if argument == "skill":
                candidates = list(dict.fromkeys(skill for skill, _ in skills))
            elif argument == "path":
                candidates = [path for skill, path in skills if context.get("skill") in (None, skill)]
            else:
                candidates = []
        matches = [c for c in candidates if c.startswith(value)]
        return types.Completion(
            values=matches[:COMPLETION_LIMIT], total=len(matches), has_more=len(matches) > COMPLETION_LIMIT
        )
