"""The model catalog: what each known model needs from the runtime, read from ``catalog.yaml``.

Usage::

    from mcp_server.catalog import default_entry, find_entry

    entry = find_entry("deepseek-ai/DeepSeek-R1")     # by id, model path or directory name
    entry.reasoning_parser                            # "deepseek-r1"
    card = entry.card()                               # a ModelCard for GET /v1/models
    entry.price.cost(prompt_tokens=1000, completion_tokens=500)   # USD

The catalog is the one place that says which SGLang ``--tool-call-parser`` and
``--reasoning-parser`` a model needs (names from SGLang's docs, "Tool Parser" and
"Reasoning Parser"), which inputs it accepts and what it costs. Engines and billing read
it; nothing else hard-codes model families.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from mcp_server.errors import CapabilityError

__all__ = ["CATALOG_PATH", "CatalogEntry", "ModelCard", "Price", "catalog_price", "default_entry", "find_entry", "load_catalog"]

CATALOG_PATH = Path(__file__).with_name("catalog.yaml")
MODALITIES = frozenset({"text", "image"})
_FIELDS = {
    "id", "model_path", "owned_by", "context_length", "tool_call_parser", "embedded_tool_call_format",
    "reasoning_parser", "input_modalities", "price", "sglang_args",
}


@dataclass(frozen=True)
class ModelCard:
    """A served model as listed by ``GET /v1/models``.

    Attributes:
        id: the model id clients send in ``model``.
        owned_by: the organisation shown in the model list.
        context_length: the model's context window in tokens.
        tool_call_format: the chat-template family for tool calls (e.g. ``hermes``), or None.
        reasoning_parser: the reasoning format (e.g. ``deepseek-r1``), or None.
        input_modalities: what the model accepts, e.g. ``("text",)`` or ``("text", "image")``.
        backend: how the engine computes its answers (e.g. ``llamacpp-amx-q8_0``), None
            where it does not say; responses carry it in ``system_fingerprint``.
    """

    id: str
    owned_by: str = "chatcap"
    context_length: int = 2048
    tool_call_format: str | None = None
    reasoning_parser: str | None = None
    input_modalities: tuple[str, ...] = ("text",)
    backend: str | None = None


@dataclass(frozen=True)
class Price:
    """List price of a model.

    Attributes:
        input: USD per million prompt tokens.
        output: USD per million completion tokens.
    """

    input: float
    output: float

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        """Return the price of one request in USD."""
        return (prompt_tokens * self.input + completion_tokens * self.output) / 1_000_000


@dataclass(frozen=True)
class CatalogEntry:
    """One model of the catalog (see the field comments at the top of ``catalog.yaml``).

    Attributes:
        id: the model id clients send.
        model_path: the Hugging Face repository id SGLang loads.
        owned_by: the organisation shown in the model list.
        context_length: context window in tokens.
        tool_call_parser: SGLang ``--tool-call-parser`` name, or None.
        embedded_tool_call_format: the embedded engine's tool-call format (a name of
            :data:`mcp_server.engines.embedded.decoding.toolcalls.FAMILIES`), or None.
        reasoning_parser: SGLang ``--reasoning-parser`` name (also a
            :data:`mcp_server.families.REASONING_PARSERS` name), or None.
        input_modalities: ``("text",)`` or ``("text", "image")``.
        price: list price per million tokens.
        sglang_args: extra SGLang flags the model needs (e.g. ``("--tp-size", "8")``).
    """

    id: str
    model_path: str
    owned_by: str
    context_length: int
    tool_call_parser: str | None
    embedded_tool_call_format: str | None
    reasoning_parser: str | None
    input_modalities: tuple[str, ...]
    price: Price
    sglang_args: tuple[str, ...]

    def card(self, served_id: str | None = None, context_length: int | None = None) -> ModelCard:
        """Return the :class:`ModelCard` of this model.

        Args:
            served_id: the id it is served under (default: :attr:`id`).
            context_length: the served context window, when it differs from the catalog's.
        """
        return ModelCard(
            id=served_id or self.id,
            owned_by=self.owned_by,
            context_length=context_length or self.context_length,
            tool_call_format=self.embedded_tool_call_format,
            reasoning_parser=self.reasoning_parser,
            input_modalities=self.input_modalities,
        )


def _entry(raw: Any, where: str) -> CatalogEntry:
    if not isinstance(raw, dict) or set(raw) != _FIELDS:
        missing = sorted(_FIELDS - set(raw)) if isinstance(raw, dict) else sorted(_FIELDS)
        extra = sorted(set(raw) - _FIELDS) if isinstance(raw, dict) else []
        raise CapabilityError(f"{where}: missing fields {missing}, unknown fields {extra}.")
    modalities = tuple(raw["input_modalities"])
    price = raw["price"]
    if "text" not in modalities or not set(modalities) <= MODALITIES:
        raise CapabilityError(f"{where}.input_modalities: {list(modalities)} must hold text and only {sorted(MODALITIES)}.")
    if not isinstance(price, dict) or set(price) != {"input", "output"} or min(price.values()) < 0:
        raise CapabilityError(f"{where}.price: needs non-negative input and output (USD per million tokens).")
    if not isinstance(raw["context_length"], int) or raw["context_length"] < 1:
        raise CapabilityError(f"{where}.context_length: must be a positive integer.")
    return CatalogEntry(
        id=str(raw["id"]),
        model_path=str(raw["model_path"]),
        owned_by=str(raw["owned_by"]),
        context_length=raw["context_length"],
        tool_call_parser=raw["tool_call_parser"],
        embedded_tool_call_format=raw["embedded_tool_call_format"],
        reasoning_parser=raw["reasoning_parser"],
        input_modalities=modalities,
        price=Price(float(price["input"]), float(price["output"])),
        sglang_args=tuple(str(a) for a in raw["sglang_args"]),
    )


@functools.cache
def load_catalog(path: Path = CATALOG_PATH) -> tuple[CatalogEntry, ...]:
    """Load and check the catalog (cached per path).

    Returns:
        The entries in file order; the first is the default model.

    Raises:
        CapabilityError: the file is malformed; the message names the entry and field.
    """
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    models = data.get("models") if isinstance(data, dict) else None
    if not models:
        raise CapabilityError(f"{path}: expected a non-empty 'models' list.")
    entries = tuple(_entry(raw, f"{path.name}: models[{i}]") for i, raw in enumerate(models))
    ids = [e.id for e in entries]
    if len(set(ids)) != len(ids):
        raise CapabilityError(f"{path}: duplicate model ids.")
    return entries


def default_entry() -> CatalogEntry:
    """The default model (the catalog's first entry: the embedded engine's bundled model)."""
    return load_catalog()[0]


def find_entry(name: str) -> CatalogEntry | None:
    """Find a model by id, by Hugging Face path, or by a local directory's name.

    Args:
        name: ``meta-llama/Meta-Llama-3.1-8B-Instruct``, ``meta-llama/Llama-3.1-8B-Instruct``
            or ``/models/Llama-3.1-8B-Instruct`` all find the same entry.

    Returns:
        The entry, or None when the catalog does not know the model.
    """
    entries = load_catalog()
    for entry in entries:
        if name in (entry.id, entry.model_path):
            return entry
    base = PurePosixPath(name.rstrip("/")).name
    matches = [e for e in entries if base in (PurePosixPath(e.id).name, PurePosixPath(e.model_path).name)]
    return matches[0] if len(matches) == 1 else None


def catalog_price(name: str) -> Price:
    """The catalog's price of a model (:func:`find_entry`), free (0, 0) for a model it lacks."""
    entry = find_entry(name)
    return entry.price if entry is not None else Price(0.0, 0.0)
