"""MCP transport security (DNS-rebinding protection) on the live server's ``/mcp``."""

from __future__ import annotations

import json
import socket

import httpx
import pytest

from mcp_server.cli import _settings, build_parser
from mcp_server.surfaces.mcp_security import transport_security

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


def test_several_host_or_origin_headers_are_refused_and_case_does_not_matter(server):
    port = server.base_url.rsplit(":", 1)[1]
    body = json.dumps(INITIALIZE).encode()
    for twice in (f"Host: 127.0.0.1:{port}\r\nOrigin: http://127.0.0.1:{port}\r\nOrigin: http://evil.example.com",
                  f"Host: 127.0.0.1:{port}\r\nHost: evil.example.com"):
        head = (f"POST /mcp HTTP/1.1\r\n{twice}\r\nAuthorization: Bearer {server.api_key}\r\n"
                f"Accept: application/json, text/event-stream\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n")
        with socket.create_connection(("127.0.0.1", int(port)), timeout=60) as raw:  # httpx refuses to send these
            raw.sendall(head.encode() + body)
            answer = b"".join(iter(lambda: raw.recv(65536), b""))
        assert answer.startswith(b"HTTP/1.1 400"), answer[:200]
        assert b"mcp-session-id" not in answer.lower()
    response = initialize(server, Host=f"LOCALHOST:{port}", Origin=f"HTTP://LocalHost:{port}")
    assert response.status_code == 200, response.text
    session = response.headers["mcp-session-id"]
    httpx.delete(f"{server.base_url}/mcp", timeout=60, headers={
        "Authorization": f"Bearer {server.api_key}", "mcp-session-id": session, "mcp-protocol-version": "2025-06-18"})
