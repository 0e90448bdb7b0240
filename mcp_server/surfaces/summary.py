"""The one line a server logs when it is ready: what it serves, how, and on what terms.

Example (one line in the log)::

    Ready in 2.1 s at http://127.0.0.1:8000: model HuggingFaceTB/SmolLM2-135M-Instruct
    (family: tool calls hermes, reasoning none); runner llamacpp; threads 1; context 2048
    tokens x 8 sequences; KV cache q8_0; grammar backend llguidance; data directory none
    (no keys, no ledger); keys off; price free

The family is what the engine detected (``ModelCard.tool_call_format`` and
``reasoning_parser``); the engine's own settings come from ``Engine.describe``.
"""

from __future__ import annotations

from mcp_server.catalog import ModelCard, Price
from mcp_server.gateway import Gateway
from mcp_server.settings import Settings

__all__ = ["startup_summary"]


def startup_summary(gateway: Gateway, settings: Settings, seconds: float, url: str | None = None) -> str:
    """The start-up summary line of a started engine behind ``gateway``.

    Args:
        gateway: the gateway (its service's engine has started).
        settings: the settings the server runs with (for the data directory).
        seconds: how long the start took.
        url: where the server listens, or None (MCP over stdio).
    """
    engine = gateway.service.engine
    cards = engine.models
    parts = [_models(cards), *(f"{name} {value}" for name, value in engine.describe().items())]
    parts.append(f"data directory {settings.data_dir or 'none (no keys, no ledger)'}")
    parts.append(f"keys {'on' if gateway.requires_key() else 'off'}")
    prices = {_price(gateway.price_of(card.id)) for card in cards}
    parts.append(f"price {' or '.join(sorted(prices))}" if len(prices) > 1 else f"price {prices.pop()}")
    where = f" at {url}" if url else ""
    return f"Ready in {seconds:.1f} s{where}: " + "; ".join(parts)


def _models(cards: list[ModelCard]) -> str:
    """``model a, b (family: ...)``: ids that share a family are listed together (aliases)."""
    families: dict[str, list[str]] = {}
    for card in cards:
        family = f"tool calls {card.tool_call_format or 'none'}, reasoning {card.reasoning_parser or 'none'}"
        families.setdefault(family, []).append(card.id)
    word = "model" if len(cards) == 1 else "models"
    return f"{word} " + ", ".join(f"{', '.join(ids)} (family: {family})" for family, ids in families.items())


def _price(price: Price) -> str:
    if price.input == 0 and price.output == 0:
        return "free"
    return f"${price.input:g} / ${price.output:g} per million input / output tokens"
