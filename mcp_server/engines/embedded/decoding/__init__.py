"""What the embedded engine decodes with: grammars (:mod:`.constraints`), tool-call formats
(:mod:`.toolcalls`) and reasoning formats (:mod:`.reasoning`), and the check that the model
catalog names only formats these registries have."""

from __future__ import annotations

from collections.abc import Iterable

from mcp_server.catalog import CatalogEntry
from mcp_server.engines.embedded.decoding.reasoning import FORMATS as REASONING_FORMATS
from mcp_server.engines.embedded.decoding.toolcalls.registry import FAMILIES
from mcp_server.errors import CapabilityError

__all__ = ["check_catalog"]


def check_catalog(entries: Iterable[CatalogEntry]) -> None:
    """Check that every catalog entry names a known tool-call and reasoning format.

    Args:
        entries: the catalog (:func:`mcp_server.catalog.load_catalog`).

    Raises:
        CapabilityError: an ``embedded_tool_call_format`` is not in the tool-call registry, or
            a ``reasoning_parser`` is not a reasoning format; the message names the model,
            the field and the known names.
    """
    for entry in entries:
        for field, name, known in (
            ("embedded_tool_call_format", entry.embedded_tool_call_format, FAMILIES),
            ("reasoning_parser", entry.reasoning_parser, REASONING_FORMATS),
        ):
            if name is not None and name not in known:
                raise CapabilityError(
                    f"catalog.yaml: model {entry.id!r}: {field} {name!r} is unknown; known: {sorted(known)}."
                )
