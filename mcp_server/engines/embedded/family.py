"""The served model's family: flags, the catalog, or detection from its chat template.

Order: ``--tool-call-parser`` / ``--reasoning-parser`` (SGLang's flag and parser names)
win; then the catalog entry of a bundled model; then :func:`mcp_server.families.detect.detect`
on the tokenizer's chat template. One start-up log line says what was chosen and how; a
model that nothing determines logs a warning naming the flag, and its requests with tools
are refused (:func:`.decoding.toolcalls.support.check_tools_allowed`).
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

from mcp_server.catalog import CatalogEntry, ModelCard
from mcp_server.engines.base import GenerationRequest
from mcp_server.engines.embedded.decoding.toolcalls import FAMILIES as GRAMMAR_FORMATS
from mcp_server.engines.embedded.decoding.toolcalls import ToolCallFormat
from mcp_server.engines.embedded.decoding.toolcalls.support import grammar_format
from mcp_server.engines.embedded.prompt import TemplateTools, template_tools
from mcp_server.errors import InvalidRequest
from mcp_server.families import check_names
from mcp_server.families.detect import detect

__all__ = ["ServedFamily", "check_flags", "keeps_special_tokens", "resolve_family"]

logger = logging.getLogger(__name__)


class ServedFamily:
    """The served model's formats, as the engine uses them.

    Args:
        tool_call_parser: the ``--tool-call-parser`` flag, or None.
        reasoning_parser: the ``--reasoning-parser`` flag, or None.
        entry: the model's catalog entry, or None.

    Raises:
        InvalidRequest: a flag names a format the family table does not have.

    Attributes:
        tool_call_parser: the tool-call format (flag or catalog until :meth:`settle`), or None.
        reasoning_parser: the reasoning format, or None.
        template_tools: what the chat template renders of tool use itself
            (:func:`~mcp_server.engines.embedded.prompt.template_tools`); what it does not,
            :attr:`tool_format`'s instructions write as text first.
    """

    def __init__(self, tool_call_parser: str | None, reasoning_parser: str | None, entry: CatalogEntry | None):
        self._flags, self._entry = check_flags(tool_call_parser, reasoning_parser), entry
        self.tool_call_parser = tool_call_parser or (entry.embedded_tool_call_format if entry else None)
        self.reasoning_parser = reasoning_parser or (entry.reasoning_parser if entry else None)
        self.template_tools = TemplateTools()

    def settle(self, card: ModelCard, tokenizer: Any) -> ModelCard:
        """Decide from the flags, the catalog and the tokenizer's chat template (logged); return
        ``card`` with ``tool_call_format`` and ``reasoning_parser`` set. Also decides
        :attr:`template_tools` (logged)."""
        self.tool_call_parser, self.reasoning_parser = resolve_family(*self._flags, self._entry, tokenizer)
        self.template_tools = support = template_tools(tokenizer)
        instructions = f"the {self.tool_format.name} format's instructions"
        logger.info(
            "Prompts with tools: calls and results rendered by %s, the tool list by %s",
            "the chat template" if support.calls else instructions,
            "the chat template" if support.calls and support.tool_list else instructions,
        )
        return replace(card, tool_call_format=self.tool_call_parser, reasoning_parser=self.reasoning_parser)

    @property
    def tool_format(self) -> ToolCallFormat:
        """The constraint and prompt-rendering format (Hermes' where the family has none)."""
        return grammar_format(self.tool_call_parser) or GRAMMAR_FORMATS["hermes"]


def check_flags(tool_call_parser: str | None, reasoning_parser: str | None) -> tuple[str | None, str | None]:
    """Return the two flags when the family table knows them.

    Raises:
        InvalidRequest: (param ``tool_call_parser`` or ``reasoning_parser``) an unknown name;
            the message lists the known ones.
    """
    try:
        check_names(tool_call_parser, None)
    except ValueError as error:
        raise InvalidRequest(str(error), param="tool_call_parser") from None
    try:
        check_names(None, reasoning_parser)
    except ValueError as error:
        raise InvalidRequest(str(error), param="reasoning_parser") from None
    return tool_call_parser, reasoning_parser


def resolve_family(
    tool_call_parser: str | None, reasoning_parser: str | None, entry: CatalogEntry | None, tokenizer: Any
) -> tuple[str | None, str | None]:
    """``(tool_call_parser, reasoning_parser)`` of the served model, logged once.

    Raises:
        InvalidRequest: a flag names a format the family table does not have.
    """
    check_flags(tool_call_parser, reasoning_parser)
    template = getattr(tokenizer, "chat_template", None)
    found = detect(template if isinstance(template, str) else None)
    how = {"tool": "--tool-call-parser", "reasoning": "--reasoning-parser"}
    tool, reasoning = tool_call_parser, reasoning_parser
    if tool is None:
        tool, how["tool"] = (entry.embedded_tool_call_format, "catalog") if entry and entry.embedded_tool_call_format else (found.tool_call_parser, found.how)
    if reasoning is None:
        reasoning, how["reasoning"] = (entry.reasoning_parser, "catalog") if entry and entry.reasoning_parser else (found.reasoning_parser, found.how)
    if tool is None:
        logger.warning(
            "Tool-call format: nothing in the model's chat template determines it; requests with tools "
            "get 400 until you pass --tool-call-parser NAME (README: Model families)."
        )
    else:
        logger.info(
            "Model family: tool calls %s (%s), reasoning %s (%s)", tool, how["tool"], reasoning or "none", how["reasoning"]
        )
    return tool, reasoning


def keeps_special_tokens(request: GenerationRequest, card: ModelCard) -> bool:
    """Whether a sequence's text must keep special tokens: many families write their call and
    reasoning markers as special tokens (``[TOOL_CALLS]``, ``<|python_tag|>``, harmony's
    ``<|channel|>``), which plain decoding drops. As vLLM does, they are kept when the output
    goes through a tool-call parser (a request with tools) or a reasoning parser; end-of-turn
    tokens never reach the text."""
    calls = bool(request.tools) and request.tool_choice != "none" and card.tool_call_format is not None
    return calls or card.reasoning_parser is not None
