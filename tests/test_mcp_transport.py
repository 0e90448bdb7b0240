"""MCP transport security (DNS-rebinding protection) on the live server's ``/mcp``."""

from __future__ import annotations

import httpx
import pytest

from mcp_server.cli import _settings, build_parser
from mcp_server.surfaces.mcp import transport_security

INITIALIZE = {
    "jsonrpc": "2.0", "id": 1, "method": "initialize",
    "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}},
}


def initialize(server, **headers: str) -> httpx.Response:
    return httpx.post(
        f"{server.base_url}/mcp", json=INITIALIZE, timeout=60,
        headers={"Authorization": f"Bearer {server.api_key}", "Accept": "application/json, text/event-stream",
                 **headers},
    )


@pytest.mark.parametrize(
    ("headers", "status"),
    [({"Host": "evil.example.com"}, 421), ({"Origin": "http://evil.example.com"}, 403),
     ({"Host": "evil.example.com:80", "Origin": "http://evil.example.com"}, 421)],
)
def test_foreign_host_or_origin_gets_no_session(server, headers, status):
    response = initialize(server, **headers)
    assert response.status_code == status, response.text
    assert "mcp-session-id" not in response.headers


def test_own_host_and_origin_get_a_session(server):
    port = server.base_url.rsplit(":", 1)[1]
    for host in (f"127.0.0.1:{port}", f"localhost:{port}"):
        response = initialize(server, Host=host, Origin=f"http://{host}")
        assert response.status_code == 200, response.text
        assert response.headers["mcp-session-id"]


def test_flags_add_hosts_and_origins(monkeypatch):
    monkeypatch.setenv("CHATCAP_ALLOWED_ORIGINS", "https://app.example.com, http://localhost:*")
    args = build_parser().parse_args(
        ["serve", "--host", "10.0.0.5", "--port", "9000", "--allowed-hosts", "api.example.com,api.example.com:*"]
    )
    security = transport_security(_settings(args))
    assert security.enable_dns_rebinding_protection
    assert security.allowed_hosts == ["10.0.0.5:9000", "api.example.com", "api.example.com:*"]
    assert {"https://app.example.com", "http://localhost:*", "http://10.0.0.5:9000"} <= set(security.allowed_origins)
    loopback = transport_security(_settings(build_parser().parse_args(["serve", "--port", "9000"])))
    assert {"127.0.0.1:9000", "localhost:9000", "[::1]:9000"} <= set(loopback.allowed_hosts)
