"""mcp_server.capability.loader: the capability validates at load, and a broken one names the failing path."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import yaml
from jsonschema import Draft202012Validator

from mcp_server.capability.loader import (
    CAPABILITY_PATH,
    NAFTIKO_SCHEMA_PATH,
    load_capability,
)
from mcp_server.errors import CapabilityError


@pytest.fixture
def broken(tmp_path: Path):
    """Write a copy of the capability with one edit applied to its parsed YAML."""

    def write(edit) -> Path:
        document = yaml.safe_load(CAPABILITY_PATH.read_text(encoding="utf-8"))
        edit(document)
        path = tmp_path / "capability.yaml"
        path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
        return path

    return write


def test_capability_file_validates_against_the_naftiko_schema() -> None:
    schema = json.loads(NAFTIKO_SCHEMA_PATH.read_text(encoding="utf-8"))
    document = yaml.safe_load(CAPABILITY_PATH.read_text(encoding="utf-8"))
    Draft202012Validator(schema).validate(document)
    assert document["naftiko"] == "1.0.0-alpha3"


def test_load_capability_parses_names_paths_and_hints() -> None:
    capability = load_capability()
    assert [tool.name for tool in capability.tools] == ["create-chat-completion", "list-models", "chat"]
    assert all(tool.label and tool.description for tool in capability.tools)
    models = capability.tool("list-models")
    assert (models.hints.read_only, models.hints.destructive, models.hints.idempotent) == (True, False, True)
    assert [r.path for r in capability.resources] == ["/v1/chat/completions", "/v1/models", "/health"]
    assert capability.rest_paths == {
        "create-chat-completion": "/v1/chat/completions", "list-models": "/v1/models", "health": "/health"}
    assert capability.path == CAPABILITY_PATH
    assert capability.mcp is not None and capability.mcp.namespace == "chat-mcp"
    assert capability.resources[0].operations[0].method == "POST"
    assert [s.name for s in capability.skills] == ["chat-completions"]
    assert {t.action for t in capability.skills[0].tools} == {t.name for t in capability.tools}
    (runtime,) = capability.consumes
    assert runtime.namespace == "inference"
    assert {(op.name, op.method, op.path) for op in runtime.operations} == {
        ("create-chat-completion", "POST", "/v1/chat/completions"),
        ("list-models", "GET", "/v1/models"),
    }
    for tool in capability.tools:
        namespace, _, operation = tool.call.partition(".")
        assert namespace == runtime.namespace and operation in {op.name for op in runtime.operations}


def test_capability_is_frozen() -> None:
    capability = load_capability()
    with pytest.raises(dataclasses.FrozenInstanceError):
        capability.tools[0].name = "other"  # type: ignore[misc]


def test_unknown_tool_lookup_raises_key_error() -> None:
    with pytest.raises(KeyError, match="no MCP tool named 'nope'"):
        load_capability().tool("nope")


def test_bad_tool_name_names_the_failing_path(broken) -> None:
    def edit(document):
        document["capability"]["exposes"][1]["tools"][0]["name"] = "Bad Name!"

    with pytest.raises(CapabilityError) as caught:
        load_capability(broken(edit))
    assert caught.value.message.startswith("capability.exposes[1].tools[0].name: ")
    assert "Bad Name!" in caught.value.message


def test_bad_hint_names_the_failing_path(broken) -> None:
    def edit(document):
        document["capability"]["exposes"][1]["tools"][2]["hints"]["readOnly"] = "yes"

    with pytest.raises(CapabilityError, match=r"^capability\.exposes\[1\]\.tools\[2\]\.hints\.readOnly: "):
        load_capability(broken(edit))


def test_missing_info_description_names_the_field(broken) -> None:
    with pytest.raises(CapabilityError, match=r"^info: 'description' is a required property"):
        load_capability(broken(lambda document: document["info"].pop("description")))


def test_wrong_version_is_rejected(broken) -> None:
    def edit(document):
        document["naftiko"] = "1.0.0-alpha2"

    with pytest.raises(CapabilityError, match=r"^naftiko: "):
        load_capability(broken(edit))


def test_exposes_type_not_served_here_raises(broken) -> None:
    def edit(document):
        document["capability"]["exposes"].append({"type": "control", "port": 9100})

    with pytest.raises(CapabilityError, match=r"capability\.exposes\[3\]\.type: 'control' is not served here"):
        load_capability(broken(edit))


def test_second_adapter_of_one_type_raises(broken) -> None:
    def edit(document):
        second = dict(document["capability"]["exposes"][1], namespace="other-mcp")
        document["capability"]["exposes"].append(second)

    with pytest.raises(CapabilityError, match=r"capability\.exposes\[3\]\.type: a second 'mcp' adapter"):
        load_capability(broken(edit))


def test_unreadable_file_raises_capability_error(tmp_path: Path) -> None:
    with pytest.raises(CapabilityError, match="cannot read capability"):
        load_capability(tmp_path / "missing.yaml")
