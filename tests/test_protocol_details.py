"""Protocol details peer clients rely on, against the live server (``--api-key`` set).

- A 401 carries ``WWW-Authenticate: Bearer`` (RFC 6750) on ``/v1`` and ``/mcp``.
- Unknown top-level request fields: 400 naming them (OpenAI's rule), except the peer
  extensions the SGLang router adds (accepted at the values that change nothing).
- The skill archive a server hands out calls that server.
- The playground page at ``/`` needs no key and loads nothing from elsewhere (the browser
  test is ``tests/test_playground.py``).
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import zipfile

import httpx
import pytest

from mcp_server.protocol.request import ACCEPTED_EXTENSIONS
from tests.conftest import API_KEY

MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
BODY = {"model": MODEL, "messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 2}
# What the SGLang router sends along with every request it forwards (its defaults).
ROUTER_DEFAULTS = {
    "ignore_eos": False, "no_stop_trim": False, "skip_special_tokens": True, "separate_reasoning": True,
    "stream_reasoning": True, "return_hidden_states": False, "continue_final_message": False, "min_tokens": 0,
    "rid": "req-from-router-1", "priority": None, "chat_template_kwargs": None, "lora_path": None,
    "session_params": None, "stop_token_ids": None, "regex": None, "ebnf": None, "bootstrap_host": None,
    "routed_dp_rank": None, "return_routed_experts": False, "return_cached_tokens_details": False,
}


def auth(key: str = API_KEY) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.mark.parametrize("path", ["/v1/models", "/v1/chat/completions", "/mcp"])
def test_a_401_carries_a_bearer_challenge(server, path):
    missing = httpx.post(server.base_url + path, json=BODY, timeout=60)
    wrong = httpx.post(server.base_url + path, json=BODY, headers=auth("sk-wrong"), timeout=60)
    doubled = httpx.post(server.base_url + path, json=BODY, timeout=60,
                         headers=[("Authorization", f"Bearer {API_KEY}"), ("Authorization", f"Bearer {API_KEY}")])
    assert missing.status_code == wrong.status_code == doubled.status_code == 401
    assert missing.headers["www-authenticate"] == 'Bearer realm="chatcap"'  # RFC 6750 3.1: no error without a token
    assert wrong.headers["www-authenticate"] == 'Bearer realm="chatcap", error="invalid_token"'
    assert doubled.headers["www-authenticate"] == 'Bearer realm="chatcap", error="invalid_request"'
    assert wrong.json()["error"]["code"] == "invalid_api_key"


def post(server, body: dict) -> httpx.Response:
    return httpx.post(f"{server.base_url}/v1/chat/completions", json=body, headers=auth(), timeout=120)


def test_an_unknown_field_is_400_naming_it(server):
    response = post(server, {**BODY, "temprature": 0.5, "zeta": 1})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == "temprature" and error["code"] == "unknown_parameter"
    assert "temprature, zeta" in error["message"]
    assert post(server, {**BODY, "temprature": None}).status_code == 200  # null means absent, as everywhere


def test_the_sglang_router_extensions_at_their_defaults_are_accepted(server):
    assert set(ROUTER_DEFAULTS) <= set(ACCEPTED_EXTENSIONS)
    response = post(server, {**BODY, **ROUTER_DEFAULTS, "service_tier": "auto", "safety_identifier": "u-1"})
    assert response.status_code == 200, response.text
    streamed = httpx.post(f"{server.base_url}/v1/chat/completions", headers=auth(), timeout=120,
                          json={**BODY, **ROUTER_DEFAULTS, "stream": True})
    assert streamed.status_code == 200 and "data: [DONE]" in streamed.text


@pytest.mark.parametrize(("field", "value"), [
    ("ignore_eos", True), ("skip_special_tokens", False), ("separate_reasoning", False), ("min_tokens", 4),
    ("chat_template_kwargs", {"enable_thinking": False}), ("stop_token_ids", [2]), ("regex", "a+"),
    ("modalities", ["text", "audio"]),
])
def test_an_extension_we_do_not_implement_is_400_at_another_value(server, field, value):
    response = post(server, {**BODY, field: value})
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == field


def test_the_skill_archive_calls_the_server_that_served_it(server, tmp_path):
    archive = httpx.get(f"{server.base_url}/skills/chat-completions/download", timeout=60)
    with zipfile.ZipFile(io.BytesIO(archive.content)) as files:
        script = files.read("chat-completions/scripts/chat.py").decode()
        skill_md = files.read("chat-completions/SKILL.md").decode()
    assert f"{server.base_url}/v1" in script and f"{server.base_url}/v1" in skill_md
    assert "127.0.0.1:8000" not in script + skill_md
    (tmp_path / "chat.py").write_text(script)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHATCAP_")} | {"CHATCAP_API_KEY": API_KEY}
    answer = subprocess.run([sys.executable, str(tmp_path / "chat.py"), "--max-tokens", "4", "--raw", "Hi"],
                            capture_output=True, text=True, env=env, timeout=120)
    assert answer.returncode == 0, answer.stderr
    assert '"chat.completion"' in answer.stdout


def test_the_page_needs_no_key_and_allows_only_its_own_origin(server):
    page = httpx.get(server.base_url + "/", timeout=30)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert "http" not in page.text.replace(server.base_url, "").split("<body>")[0]  # no CDN in <head>
    for asset in ("/playground/playground.js", "/playground/playground.css"):
        assert httpx.get(server.base_url + asset, timeout=30).status_code == 200
    assert httpx.get(server.base_url + "/playground/nope.js", timeout=30).status_code == 404
