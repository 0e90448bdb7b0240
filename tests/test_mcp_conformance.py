"""The official MCP conformance suite (``@modelcontextprotocol/conformance``, npm) against a live server.

``make setup`` installs the suite and the Node.js (>= 22) it needs into ``.tools/``; where
they are absent these tests are skipped with the reason. The suite takes a URL (it has no
stdio mode): it runs against ``chatcap serve`` over streamable HTTP, and against
``chatcap mcp`` over stdio through :mod:`tests.stdio_bridge`. Every check of every
applicable scenario must pass. The others need the suite's own fixture server: tools
named ``test_*``, resources under ``test://``, prompts, or tools that ask the client for
sampling or elicitation; this server has none of them (it serves chat completions), so
they are listed in :data:`NOT_APPLICABLE` with the reason.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.live_server import ROOT, start_server
from tests.stdio_bridge import StdioBridge

TOOLS_BIN = ROOT / ".tools" / "node_modules" / ".bin"
SUITE = TOOLS_BIN / "conformance"
NODE = TOOLS_BIN / "node"

APPLICABLE = {
    "server-initialize", "ping", "tools-list", "resources-list", "logging-set-level", "completion-complete",
    "server-sse-multiple-streams", "dns-rebinding-protection",
}
_FIXTURE_TOOL = "calls the suite's own fixture tool"
NOT_APPLICABLE = {
    "tools-call-simple-text": f"{_FIXTURE_TOOL} test_simple_text (passes only as an unknown-tool error)",
    "tools-call-error": f"{_FIXTURE_TOOL} test_error_handling (passes only as an unknown-tool error)",
    "tools-call-image": f"{_FIXTURE_TOOL} test_image_content; no tool here returns images",
    "tools-call-audio": f"{_FIXTURE_TOOL} test_audio_content; no tool here returns audio",
    "tools-call-embedded-resource": f"{_FIXTURE_TOOL} test_embedded_resource",
    "tools-call-mixed-content": f"{_FIXTURE_TOOL} test_multiple_content_types",
    "tools-call-with-logging": f"{_FIXTURE_TOOL} test_tool_with_logging (logging is covered by test_mcp_features)",
    "tools-call-with-progress": f"{_FIXTURE_TOOL} test_tool_with_progress (progress is covered by test_mcp)",
    "tools-call-sampling": f"{_FIXTURE_TOOL} test_sampling; no tool here asks the client to sample",
    "tools-call-elicitation": f"{_FIXTURE_TOOL} test_elicitation; no tool here elicits input",
    "elicitation-sep1034-defaults": f"{_FIXTURE_TOOL} test_elicitation_sep1034_defaults",
    "elicitation-sep1330-enums": f"{_FIXTURE_TOOL} test_elicitation_sep1330_enums",
    "json-schema-2020-12": f"{_FIXTURE_TOOL} json_schema_2020_12_tool (our tool schemas are 2020-12: test_generate)",
    "server-sse-polling": f"{_FIXTURE_TOOL} test_reconnection",
    "resources-read-text": "reads the fixture resource test://static-text",
    "resources-read-binary": "reads the fixture resource test://static-binary; every resource here is text",
    "resources-templates-read": "reads the fixture template test://template/{id}/data",
    "resources-subscribe": "resources/subscribe: not declared (resources here never change while serving)",
    "resources-unsubscribe": "resources/unsubscribe: not declared (no subscriptions)",
    "prompts-list": "prompts: not declared (the capability defines no prompts)",
    "prompts-get-simple": "prompts: not declared (the capability defines no prompts)",
    "prompts-get-with-args": "prompts: not declared (the capability defines no prompts)",
    "prompts-get-embedded-resource": "prompts: not declared (the capability defines no prompts)",
    "prompts-get-with-image": "prompts: not declared (the capability defines no prompts)",
}


def _missing() -> str | None:
    """Why the suite cannot run here, or None."""
    if not SUITE.exists() or not NODE.exists():
        return f"MCP conformance suite or Node.js not installed under {TOOLS_BIN} (run `make setup`)"
    try:
        version = subprocess.run([str(NODE), "--version"], capture_output=True, text=True, timeout=60).stdout.strip()
    except (OSError, subprocess.SubprocessError) as exc:
        return f"{NODE} does not run: {exc}"
    if not re.fullmatch(r"v(\d+)\..*", version) or int(version[1:].split(".")[0]) < 22:
        return f"the conformance suite needs Node.js >= 22, {NODE} is {version or 'unusable'}"
    return None


def run_suite(url: str, out: Path, scenarios: list[str] | None = None) -> dict[str, list[dict]]:
    """Run ``scenarios`` (default: every server scenario, ``--suite all``) against ``url``.

    Returns:
        The suite's checks (``{"id", "status", "errorMessage", ...}``) by scenario name.
    """
    env = {**os.environ, "PATH": f"{TOOLS_BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    selections = [["--suite", "all"]] if scenarios is None else [["--scenario", name] for name in scenarios]
    outputs = []
    for selection in selections:
        done = subprocess.run(
            [str(SUITE), "server", "--url", url, *selection, "-o", str(out)],
            capture_output=True, text=True, env=env, timeout=600,
        )
        outputs.append(f"exit {done.returncode}:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    checks = {}
    for path in out.glob("server-*/checks.json"):
        scenario = re.sub(r"-\d{4}-\d\d-\d\dT.*$", "", path.parent.name).removeprefix("server-")
        checks[scenario] = json.loads(path.read_text())
    assert checks, "the suite wrote no results: " + "\n".join(outputs)
    return checks


def failures(checks: dict[str, list[dict]], scenarios: set[str]) -> dict[str, list]:
    """The failed checks of ``scenarios`` (a scenario that did not run fails)."""
    failed = {
        scenario: [(c["id"], c.get("errorMessage")) for c in checks.get(scenario, [])
                   if c["status"] == "FAILURE"] or ([] if scenario in checks else [("not run", None)])
        for scenario in scenarios
    }
    return {scenario: found for scenario, found in failed.items() if found}


@pytest.mark.timeout(900)
@pytest.mark.skipif(_missing() is not None, reason=_missing() or "")
def test_conformance_suite_over_streamable_http(tmp_path):
    # No --api-key: the suite sends no Authorization header. It opens one session per
    # scenario and closes none, past the default cap of 16 per client.
    live = start_server(tmp_path, "--mcp-max-sessions-per-client", "64")
    try:
        checks = run_suite(f"{live.base_url}/mcp", tmp_path / "results")
    finally:
        live.stop()
    assert set(checks) == APPLICABLE | set(NOT_APPLICABLE), "the suite's scenarios changed: classify the new ones"
    assert not failures(checks, APPLICABLE)
    assert sum(c["status"] == "SUCCESS" for s in APPLICABLE for c in checks[s]) == 10


STDIO_NOT_APPLICABLE = {"dns-rebinding-protection": "Host/Origin checks belong to the HTTP transport"}


@pytest.mark.timeout(900)
@pytest.mark.skipif(_missing() is not None, reason=_missing() or "")
def test_conformance_suite_over_stdio(tmp_path):
    """The applicable scenarios against ``chatcap mcp``, through :class:`tests.stdio_bridge.StdioBridge`."""
    scenarios = sorted(APPLICABLE - set(STDIO_NOT_APPLICABLE))
    with StdioBridge() as bridge:
        checks = run_suite(bridge.url, tmp_path / "results", scenarios)
    assert not failures(checks, set(scenarios))
