"""What the embedded engine decodes with: grammars (:mod:`.constraints`) and tool-call
constraints and prompt rendering (:mod:`.toolcalls`); and the check that the model catalog
names only formats the family table (:mod:`mcp_server.families`) has."""

from __future__ import annotations

from collections.abc import Iterable

from mcp_server.catalog import CatalogEntry
from mcp_server.errors import CapabilityError
from mcp_server.families import REASONING_PARSERS, TOOL_CALL_PARSERS

__all__ = ["check_catalog"]


def check_catalog(entries: Iterable[CatalogEntry]) -> None:
    """Check that every catalog entry names a known tool-call and reasoning format.

    Args:
        entries: the catalog (:func:`mcp_server.catalog.load_catalog`).

    Raises:
        CapabilityError: an ``embedded_tool_call_format`` or ``reasoning_parser`` is not in
            the family table; the message names the model, the field and the known names.
    """
    for entry in entries:
        for field, name, known in (
            ("embedded_tool_call_format", entry.embedded_tool_call_format, TOOL_CALL_PARSERS),
            ("reasoning_parser", entry.reasoning_parser, REASONING_PARSERS),
        ):
            if name is not None and name not in known:
                raise CapabilityError(
                    f"catalog.yaml: model {entry.id!r}: {field} {name!r} is unknown; known: {sorted(known)}."
                )
