"""The gateway's parts in process: keys, ledger, rate limits, request limits, billing, CLI."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from mcp_server.capability.loader import load_capability
from mcp_server.catalog import ModelCard, Price
from mcp_server.cli import main
from mcp_server.engines.base import GenerationDelta, GenerationRequest
from mcp_server.errors import (
    AuthenticationError,
    InsufficientQuota,
    InvalidRequest,
    RateLimited,
)
from mcp_server.gateway import Gateway, RequestLimits
from mcp_server.gateway.db import DB_FILE, Database
from mcp_server.gateway.keys import KeyStore
from mcp_server.gateway.limits import RateLimiter
from mcp_server.gateway.records import cost_micros, usd_to_micros
from mcp_server.gateway.request_limits import json_depth
from mcp_server.protocol.request import parse_request
from mcp_server.service import ChatService
from mcp_server.surfaces.rest import error_response

PRICE = Price(1000.0, 2000.0)  # micro-dollars per token: 1000 in, 2000 out


class FakeEngine:
    """Yields one delta per token, so tests control exactly what was generated."""

    def __init__(self, tokens: int = 5):
        self.tokens = tokens
        self.calls = 0
        self.models = [ModelCard(id="m", context_length=100)]

    async def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationDelta]:
        self.calls += 1
        for i in range(1, self.tokens + 1):
            await asyncio.sleep(0)
            yield GenerationDelta("x", 10, i, "length" if i == self.tokens else None)


@pytest.fixture
def store(tmp_path: Path) -> KeyStore:
    store = KeyStore(Database.open(tmp_path))
    yield store
    store.db.close()


API_PATHS = load_capability().api_paths


def _gateway(store: KeyStore | None, engine: FakeEngine | None = None, **kwargs) -> Gateway:
    return Gateway(ChatService(engine or FakeEngine()), RequestLimits(), API_PATHS, store=store, price=PRICE, **kwargs)


def _request(**fields):
    return parse_request({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 5, **fields})


def test_key_secret_is_shown_once_and_stored_only_as_a_hash(store, tmp_path):
    key, secret = store.create("alice", credit_usd="1.5", rpm=10)
    assert secret.startswith("sk-chatcap-") and len(secret) > 40
    assert key.balance_micros == 1_500_000 and key.rpm == 10 and key.tpm is None
    store.db.close()
    raw = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith(DB_FILE))
    assert secret.encode() not in raw
    store.db = Database.open(tmp_path)
    assert store.authenticate(secret).id == key.id
    assert store.authenticate(secret + "x") is None
    assert store.top_up(key.id, "0.25").balance_micros == 1_750_000
    assert not store.revoke(key.id).active and not store.has_active_keys()


def test_usd_amounts_are_exact_micro_dollars():
    assert usd_to_micros("0.1") == 100_000 and usd_to_micros(0.3) == 300_000
    assert cost_micros(Price(0.1, 0.3), 7, 3) == 2  # 0.7 + 0.9 = 1.6, rounded up
    with pytest.raises(InvalidRequest):
        usd_to_micros("lots")


def test_rpm_and_tpm_limits_answer_429_with_retry_after(store):
    now = [1000.0]
    limiter = RateLimiter(clock=lambda: now[0])
    key, _ = store.create("carol", rpm=2, tpm=100)
    asyncio.run(limiter.admit(key))
    now[0] += 10
    asyncio.run(limiter.admit(key))
    with pytest.raises(RateLimited) as hit:
        asyncio.run(limiter.admit(key))
    assert hit.value.retry_after == 50 and hit.value.headers == {"Retry-After": "50"}
    assert "requests per minute" in hit.value.message and key.id in hit.value.message
    now[0] += 51
    asyncio.run(limiter.record_tokens(key, 150))
    with pytest.raises(RateLimited, match="tokens per minute"):
        asyncio.run(limiter.admit(key))
    now[0] += 61
    asyncio.run(limiter.admit(key))
    response = error_response(hit.value)
    assert response.status_code == 429 and response.headers["retry-after"] == "50"


def test_request_limits_name_the_field_and_the_limit():
    limits = RequestLimits(max_messages=2, max_schema_bytes=200, max_schema_depth=4)
    with pytest.raises(InvalidRequest, match="at most 2") as hit:
        limits.check(parse_request({"messages": [{"role": "user", "content": "hi"}] * 3}))
    assert hit.value.param == "messages"
    deep: dict = {"type": "object"}
    for _ in range(5):
        deep = {"type": "object", "properties": {"a": deep}}
    tool = {"type": "function", "function": {"name": "f", "parameters": deep}}
    with pytest.raises(InvalidRequest, match="levels deep") as hit:
        limits.check(_request(tools=[tool]))
    assert hit.value.param == "tools[0].function.parameters"
    wide = {"type": "object", "properties": {f"p{i}": {"type": "string"} for i in range(20)}}
    big = {"type": "json_schema", "json_schema": {"name": "r", "schema": wide}}
    with pytest.raises(InvalidRequest, match="bytes"):
        limits.check(_request(response_format=big))
    assert json_depth(1) == 0 and json_depth([]) == 1 and json_depth({"a": [1]}) == 2


def test_authentication_rules(store):
    gateway = _gateway(store)
    assert asyncio.run(gateway.authenticate(None)) is None  # no keys: open
    key, secret = store.create("dave")
    assert asyncio.run(gateway.authenticate(f"Bearer {secret}")).id == key.id
    for header in (None, "Bearer nope", f"Basic {secret}"):
        with pytest.raises(AuthenticationError) as hit:
            asyncio.run(gateway.authenticate(header))
        assert secret not in hit.value.message
    admin = _gateway(store, api_key="admin")
    assert asyncio.run(admin.authenticate("Bearer admin")) is None
    store.revoke(key.id)
    with pytest.raises(AuthenticationError, match="revoked"):
        asyncio.run(gateway.authenticate(f"Bearer {secret}"))


def test_revoking_the_last_key_keeps_the_server_closed(store):
    key, _ = store.create("hal")
    store.revoke(key.id)
    with pytest.raises(AuthenticationError, match="Missing API key"):
        asyncio.run(_gateway(store).authenticate(None))
    assert asyncio.run(_gateway(store, allow_unauthenticated=True).authenticate(None)) is None
    store.create("ivy")
    with pytest.raises(AuthenticationError):
        asyncio.run(_gateway(store, allow_unauthenticated=True).authenticate(None))


def test_api_key_file_is_read_and_excludes_api_key(tmp_path):
    from mcp_server.cli import _settings, build_parser

    path = tmp_path / "key"
    path.write_text("s3cret\n")
    assert _settings(build_parser().parse_args(["serve", "--api-key-file", str(path)])).api_key == "s3cret"
    for argv in (["--api-key-file", str(path), "--api-key", "x"], ["--api-key-file", str(tmp_path / "none")]):
        with pytest.raises(SystemExit):
            _settings(build_parser().parse_args(["serve", *argv]))


def test_completed_and_cut_short_requests_are_charged_for_what_was_generated(store):
    key, _ = store.create("erin", credit_usd="1")
    gateway = _gateway(store)

    async def cut_short():
        chunks = gateway.stream(_request(stream=True), key=key)
        received = [await anext(chunks) for _ in range(3)]  # role chunk + 2 tokens
        await chunks.aclose()
        return received

    completion = asyncio.run(gateway.complete(_request(), key=key))
    assert completion["usage"] == {
        "prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15, "prompt_tokens_details": {"cached_tokens": 0}
    }
    received = asyncio.run(cut_short())
    rows = store.db.query("SELECT * FROM ledger ORDER BY created_at")
    assert [r["status"] for r in rows] == ["completed", "cancelled"]
    assert rows[0]["cost_micros"] == cost_micros(PRICE, 10, 5) and rows[0]["completion_id"] == completion["id"]
    assert rows[1]["completion_id"] == received[0]["id"] and rows[1]["completion_tokens"] == 2
    assert store.get(key.id).balance_micros == 1_000_000 - rows[0]["cost_micros"] - rows[1]["cost_micros"]
    assert gateway.ledger.audit() == {} and gateway.in_flight == 0
    metrics = gateway.metrics.render().decode()
    assert 'chatcap_generations_total{model="m",outcome="cancelled"} 1.0' in metrics


def test_no_credit_is_402_before_any_generation(store):
    key, _ = store.create("frank", credit_usd="0")
    engine = FakeEngine()
    gateway = _gateway(store, engine)
    with pytest.raises(InsufficientQuota) as hit:
        asyncio.run(gateway.complete(_request(), key=key))
    assert hit.value.status_code == 402 and hit.value.code == "insufficient_quota"
    assert engine.calls == 0 and store.db.query("SELECT * FROM ledger") == []


def test_image_for_a_text_model_is_refused_before_admission(store):
    key, _ = store.create("jay", credit_usd="1", rpm=1)
    gateway = _gateway(store)
    image = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}]}]
    with pytest.raises(InvalidRequest, match="image"):
        asyncio.run(gateway.complete(_request(messages=image), key=key))
    assert store.db.query("SELECT * FROM ledger") == []
    asyncio.run(gateway.complete(_request(), key=key))  # the one request a minute is still there


def test_without_a_data_dir_the_gateway_keeps_no_ledger():
    gateway = _gateway(None)
    assert asyncio.run(gateway.authenticate(None)) is None
    assert asyncio.run(gateway.complete(_request()))["usage"]["completion_tokens"] == 5


def test_keys_cli_prints_the_secret_once(tmp_path, capsys):
    data = ["keys", "--data-dir", str(tmp_path)]
    assert main([*data, "create", "gina", "--credit", "2", "--tpm", "1000"]) == 0
    out = capsys.readouterr()
    secret = out.out.strip()
    assert secret.startswith("sk-chatcap-") and secret not in out.err
    key_id = out.err.split()[0]
    assert main([*data, "top-up", key_id, "0.5"]) == 0 and "$2.5" in capsys.readouterr().out
    assert main([*data, "revoke", key_id]) == 0 and "revoked" in capsys.readouterr().out
    assert main([*data, "list"]) == 0
    listing = capsys.readouterr().out
    assert key_id in listing and secret not in listing and "tpm=1000" in listing


def test_keys_cli_refuses_bad_input_with_clear_errors(tmp_path, capsys):
    data = ["keys", "--data-dir", str(tmp_path / "d")]
    assert main([*data, "list"]) == 2 and not (tmp_path / "d").exists()
    assert "no data directory" in capsys.readouterr().err
    assert main([*data, "create", "", "--credit", "1"]) == 2 and "name" in capsys.readouterr().err
    assert main([*data, "create", "k", "--credit", "1e308"]) == 2 and "too large" in capsys.readouterr().err
    assert main([*data, "create", "k", "--credit", "9000000000000"]) == 0
    key_id = capsys.readouterr().err.split()[0]
    assert main([*data, "top-up", key_id, "300000000000"]) == 2 and "exceed" in capsys.readouterr().err
    store = KeyStore(Database.open(tmp_path / "d"))
    balance = store.db.query("SELECT balance_micros, typeof(balance_micros) AS t FROM keys")[0]
    assert (balance["balance_micros"], balance["t"]) == (9_000_000_000_000 * 10**6, "integer")
    store.db.close()
    (tmp_path / "file").write_text("")
    assert main(["keys", "--data-dir", str(tmp_path / "file"), "list"]) == 2
    assert "not a directory" in capsys.readouterr().err


def test_integral_floats_are_ints_before_billing():
    """Found by schemathesis: ``"n": 4.0`` passed the schema and crashed the cost arithmetic."""
    request = _request(n=2.0, max_tokens=3.0)
    assert (request.n, request.generation.max_tokens) == (2, 3) and isinstance(request.n, int)
    completion = asyncio.run(_gateway(None).complete(request))
    assert len(completion["choices"]) == 2
