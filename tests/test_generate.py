"""mcp_server.generate.tools and mcp_server.generate.skill: generated artifacts are current, standalone and valid."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import mcp.types
import pytest
import yaml
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from mcp_server.capability.loader import load_capability
from mcp_server.capability.schemas import (
    PROJECT_ROOT,
    load_schema,
    schema_names,
    validate,
)
from mcp_server.errors import CapabilityError
from mcp_server.generate.skill import SKILLS_DIR, SkillCatalog
from mcp_server.generate.tools import (
    MCP_TOOLS_PATH,
    TOOL_SHAPES,
    generate,
    mcp_tools,
)
from mcp_server.protocol.request import UNSUPPORTED

SKILL_DIR = SKILLS_DIR / "chat-completions"


def _deref(node: Any, resolver) -> Any:
    """Replace every $ref by the schema it points to, recursively; drop document keywords."""
    if isinstance(node, list):
        return [_deref(item, resolver) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        resolved = resolver.lookup(node["$ref"])
        return _deref(resolved.contents, resolved.resolver)
    return {k: _deref(v, resolver) for k, v in node.items() if k not in ("$id", "$schema", "$defs")}


def _file_schema(name: str, drop: tuple[str, ...] = ()) -> Any:
    registry = Registry().with_resources(
        (load_schema(n)["$id"], Resource.from_contents(load_schema(n))) for n in schema_names()
    )
    schema = load_schema(name)
    schema["properties"] = {k: v for k, v in schema["properties"].items() if k not in drop}
    return _deref(schema, registry.resolver(base_uri=schema["$id"]))


def _bundled(schema: dict[str, Any]) -> Any:
    registry = Registry().with_resource("urn:tool", DRAFT202012.create_resource(schema))
    return _deref(schema, registry.resolver("urn:tool"))


def test_generate_check_is_clean_on_the_committed_tree() -> None:
    assert generate(PROJECT_ROOT, check=True) == []


def test_generate_writes_missing_files_and_check_reports_stale_ones(tmp_path: Path) -> None:
    shutil.copytree(PROJECT_ROOT / "capability", tmp_path / "capability")
    (tmp_path / MCP_TOOLS_PATH).unlink()
    written = generate(tmp_path)
    assert MCP_TOOLS_PATH in written and "skills/chat-completions/SKILL.md" in written
    assert generate(tmp_path, check=True) == []
    for relative in written:
        assert (tmp_path / relative).read_bytes() == (PROJECT_ROOT / relative).read_bytes()
    (tmp_path / "skills/chat-completions/SKILL.md").write_text("edited by hand\n")
    assert generate(tmp_path, check=True) == ["skills/chat-completions/SKILL.md"]
    assert (tmp_path / "skills/chat-completions/SKILL.md").read_text() == "edited by hand\n"


def test_committed_tool_list_matches_mcp_tools() -> None:
    committed = json.loads((PROJECT_ROOT / MCP_TOOLS_PATH).read_text(encoding="utf-8"))
    assert committed == mcp_tools(load_capability())


def test_tools_take_names_and_hints_from_the_capability() -> None:
    capability = load_capability()
    tools = mcp_tools(capability)
    assert [t["name"] for t in tools] == [t.name for t in capability.tools]
    for tool, spec in zip(tools, capability.tools, strict=True):
        assert tool["title"] == spec.label and tool["description"] == spec.description
        assert tool["annotations"] == {
            "readOnlyHint": spec.hints.read_only,
            "destructiveHint": spec.hints.destructive,
            "idempotentHint": spec.hints.idempotent,
            "openWorldHint": spec.hints.open_world,
        }
        assert tool["inputSchema"]["type"] == "object" and tool["outputSchema"]["type"] == "object"


def test_tools_are_valid_mcp_tool_definitions() -> None:
    for definition in mcp_tools(load_capability()):
        tool = mcp.types.Tool.model_validate(definition)
        assert tool.annotations is not None and tool.annotations.read_only_hint is True
        Draft202012Validator.check_schema(tool.input_schema)
        Draft202012Validator.check_schema(tool.output_schema)


def test_tool_schemas_equal_the_schema_files_after_resolution() -> None:
    tools = {t["name"]: t for t in mcp_tools(load_capability())}
    for name, shape in TOOL_SHAPES.items():
        assert _bundled(tools[name]["outputSchema"]) == _file_schema(shape.output)
        if shape.input:
            assert _bundled(tools[name]["inputSchema"]) == _file_schema(shape.input, shape.drop)
    create = tools["create-chat-completion"]["inputSchema"]
    assert "stream" not in create["properties"] and "stream_options" not in create["properties"]
    assert tools["list-models"]["inputSchema"] == {"type": "object", "properties": {}, "additionalProperties": False}
    assert tools["chat"]["inputSchema"]["required"] == ["prompt"]
    assert "$ref" not in json.dumps(tools).replace('"$ref": "#/$defs/', "")


def test_create_chat_completion_offers_only_what_the_service_accepts() -> None:
    offered = {t["name"]: t for t in mcp_tools(load_capability())}["create-chat-completion"]["inputSchema"]["properties"]
    assert set(UNSUPPORTED) <= set(load_schema("chat-completion-request")["properties"])
    assert not set(UNSUPPORTED) & set(offered), "a refused option is advertised"
    assert {"messages", "temperature", "tools", "response_format"} <= set(offered)


def test_tool_without_known_shape_raises(tmp_path: Path) -> None:
    document = yaml.safe_load((PROJECT_ROOT / "capability/chat-completions.yaml").read_text())
    document["capability"]["exposes"][1]["tools"][0]["name"] = "summarize"
    path = tmp_path / "capability.yaml"
    path.write_text(yaml.safe_dump(document))
    with pytest.raises(CapabilityError, match="'summarize' has no schemas"):
        mcp_tools(load_capability(path))


def test_agentskills_validate_passes() -> None:
    cli = Path(sys.executable).parent / "agentskills"
    result = subprocess.run([str(cli), "validate", str(SKILL_DIR)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_skill_front_matter_comes_from_the_capability() -> None:
    (skill,) = load_capability().skills
    text = (SKILL_DIR / "SKILL.md").read_text(encoding="utf-8")
    front = yaml.safe_load(text.split("---\n")[1])
    assert front["name"] == SKILL_DIR.name == skill.name
    assert front["description"] == skill.description
    for tool in load_capability().tools:
        assert f"`{tool.name}`" in text
    parameters = (SKILL_DIR / "references/parameters.md").read_text(encoding="utf-8")
    for name in load_schema("chat-completion-request")["properties"]:
        assert f"| `{name}`" in parameters


def test_skill_catalog_lists_the_skill_files() -> None:
    (entry,) = SkillCatalog(load_capability()).index()
    assert entry["name"] == "chat-completions"
    assert entry["files"] == ["SKILL.md", "references/parameters.md", "scripts/chat.py"]
    assert all((SKILL_DIR / f).is_file() for f in entry["files"])


def test_skill_archive_is_a_deterministic_zip_of_the_committed_skill() -> None:
    data = SkillCatalog(load_capability()).archive("chat-completions")
    assert data == SkillCatalog(load_capability()).archive("chat-completions")
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        assert archive.testzip() is None
        names = archive.namelist()
        assert "chat-completions/SKILL.md" in names
        assert not any("__pycache__" in n for n in names)
        for name in names:
            assert archive.read(name) == (SKILL_DIR / name.removeprefix("chat-completions/")).read_bytes()
        assert archive.getinfo("chat-completions/scripts/chat.py").external_attr >> 16 == 0o755


@pytest.mark.parametrize("name", ["nope", "../capability", "chat-completions/../.."])
def test_skill_archive_rejects_unknown_names(name: str) -> None:
    with pytest.raises(KeyError, match="unknown skill"):
        SkillCatalog(load_capability()).archive(name)


class _Completions(BaseHTTPRequestHandler):
    requests: list[tuple[str, dict[str, Any], str | None]] = []

    def do_POST(self) -> None:  # noqa: N802 (http.server API)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.requests.append((self.path, body, self.headers.get("Authorization")))
        answer = {"id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": "m", "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "Paris."}, "finish_reason": "stop"}]}
        payload = json.dumps(answer).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: Any) -> None:
        pass


def test_chat_script_posts_a_valid_request_and_prints_the_answer(tmp_path: Path) -> None:
    server = HTTPServer(("127.0.0.1", 0), _Completions)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    schema = tmp_path / "schema.json"
    schema.write_text(json.dumps({"type": "object"}))
    env = {"CHATCAP_BASE_URL": f"http://127.0.0.1:{server.server_port}/v1", "CHATCAP_API_KEY": "k", "PATH": ""}
    try:
        result = subprocess.run(
            [sys.executable, "-I", str(SKILL_DIR / "scripts/chat.py"), "--system", "Be brief.",
             "--max-tokens", "8", "--schema", str(schema), "Capital of France?"],
            capture_output=True, text=True, timeout=60, env=env,
        )
    finally:
        server.shutdown()
    assert result.returncode == 0, result.stderr
    assert result.stdout == "Paris.\n"
    path, body, auth = _Completions.requests[-1]
    assert path == "/v1/chat/completions" and auth == "Bearer k"
    validate("chat-completion-request", body)
    assert body["response_format"]["json_schema"]["schema"] == {"type": "object"}

