"""Shared fixtures."""

from __future__ import annotations

import asyncio

import pytest


@pytest.fixture(scope="session")
def tokenizer():
    """The bundled model's tokenizer (no weights), loaded once per session."""
    from mcp_server.engines.embedded.model_files import load_tokenizer

    return load_tokenizer()


@pytest.fixture(scope="session")
def xgrammar_backend(tokenizer):
    """The xgrammar grammar backend for the bundled model's vocabulary."""
    from mcp_server.engines.embedded.decoding.backends import make_backend

    return make_backend("xgrammar", tokenizer, len(tokenizer), [tokenizer.eos_token_id], 2)


@pytest.fixture(scope="session")
def llguidance_backend(tokenizer):
    """The llguidance grammar backend for the bundled model's vocabulary."""
    from mcp_server.engines.embedded.decoding.backends import make_backend

    return make_backend("llguidance", tokenizer, len(tokenizer), [tokenizer.eos_token_id], 2)


@pytest.fixture(params=["llguidance", "xgrammar"])
def grammar_backend(request):
    """Each grammar backend in turn."""
    return request.getfixturevalue(f"{request.param}_backend")


@pytest.fixture(scope="session")
def engine():
    """The embedded engine on the bundled SmolLM2-135M-Instruct, loaded once per session."""
    from mcp_server.engines.embedded.engine import EmbeddedEngine

    engine = EmbeddedEngine(max_batch_size=8)
    asyncio.run(engine.start())
    yield engine
    asyncio.run(engine.aclose())


API_KEY = "test-key-123"


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    """One live ``chatcap serve`` on a loopback port, with ``--api-key``, for the session."""
    from tests.live_server import start_server

    live = start_server(tmp_path_factory.mktemp("server"), api_key=API_KEY)
    yield live
    live.stop()


@pytest.fixture(scope="session")
def client(server):
    """The official ``openai`` client pointed at the live server (only base_url and api_key set)."""
    import openai

    return openai.OpenAI(base_url=f"{server.base_url}/v1", api_key=server.api_key)


def _session_service(start_name: str):
    """Start a real service with ``tests.services.<start_name>`` for the session (skip, saying
    why, where this machine lacks it); yield it, stop it at the end."""
    import tests.services as services

    try:
        service = getattr(services, start_name)()
    except services.Unavailable as exc:
        pytest.skip(str(exc))
    yield service
    service.stop()


@pytest.fixture(scope="session")
def postgres():
    """A real PostgreSQL 15 for the session (:func:`tests.services.start_postgres`); ``.url``."""
    yield from _session_service("start_postgres")


@pytest.fixture(scope="session")
def redis_server():
    """A real Redis for the session (:func:`tests.services.start_redis`); ``.url``."""
    yield from _session_service("start_redis")
