"""Which tool-call formats can be constrained, and how: the grammar format of a family (the
registry's own, or one built from the family table's call template) and the check that
refuses ``tool_choice`` values a format, engine or grammar backend cannot enforce. Shared by
the embedded engine and the SGLang engine (which sends the same constraint as a structural
tag)."""

from __future__ import annotations

from dataclasses import replace

from mcp_server.engines.base import GenerationRequest
from mcp_server.engines.embedded.decoding.backends import GrammarBackend
from mcp_server.engines.embedded.decoding.toolcalls.format import ToolCallFormat
from mcp_server.engines.embedded.decoding.toolcalls.registry import FAMILIES as GRAMMAR_FORMATS
from mcp_server.errors import InvalidRequest
from mcp_server.families import TOOL_CALL_PARSERS

__all__ = ["check_tools_allowed", "constrains", "grammar_format"]

_INSTRUCTIONS = """# Tools

You may call one or more functions to assist with the user query. The functions:
{tools}

To call a function, write exactly: EXAMPLE"""
"""System-prompt block for formats from the family table, for templates without tool support."""


def grammar_format(tool_call_parser: str | None) -> ToolCallFormat | None:
    """The constraint and prompt-rendering format of a family: the grammar registry's own
    (``hermes``, ``llama3``, with their families' instructions), else one built from the family
    table's call template (with its arguments' notation where they are not JSON); None when
    the format has no template (the engine then falls back to Hermes' for rendering, and
    refuses ``required``/named)."""
    if tool_call_parser in GRAMMAR_FORMATS:
        return GRAMMAR_FORMATS[tool_call_parser]
    syntax = TOOL_CALL_PARSERS.get(tool_call_parser or "")
    template = syntax.template if syntax else None
    if template is None or tool_call_parser is None:
        return None
    fmt = ToolCallFormat(
        name=tool_call_parser, prefix="", arguments_key="", suffix="", trigger=template.trigger, instructions="",
        result_role="user", result_open="<tool_response>\n", result_close="\n</tool_response>",
        begin=template.begin, end=template.end, separator=template.separator, arguments=template.arguments,
    )
    example = fmt.call_text("FUNCTION_NAME", '{"argument": "value"}').replace("{", "{{").replace("}", "}}")
    return replace(fmt, instructions=_INSTRUCTIONS.replace("EXAMPLE", example))


def check_tools_allowed(request: GenerationRequest, tool_call_parser: str | None, backend: GrammarBackend | None = None) -> None:
    """Refuse tools the served model's format cannot parse or constrain.

    Args:
        request: the request.
        tool_call_parser: the served model's format, or None (unknown).
        backend: the embedded engine's grammar backend; None for SGLang (whose backend
            compiles structural tags with JSON arguments only).

    Raises:
        InvalidRequest: (param ``tools``) no tool-call format is known for the model; (param
            ``tool_choice``) ``required`` or a named function for a format without a
            constraint, or on SGLang for one whose arguments are not JSON; (param
            ``grammar_backend``) for one whose arguments' notation the embedded engine's
            grammar backend does not compile (XML-style and pythonic: llguidance only);
            (param ``tools[i].function.name``) a name the format cannot write back
            (:meth:`~mcp_server.families.arguments.ArgumentSyntax.writes_function`).
    """
    if not request.tools or request.tool_choice == "none":
        return
    if tool_call_parser is None:
        raise InvalidRequest(
            "The served model's tool-call format is unknown (nothing in its chat template determines it); "
            "start the server with --tool-call-parser NAME to use tools.",
            param="tools",
        )
    if request.tool_choice in (None, "auto"):
        return
    fmt = grammar_format(tool_call_parser)
    if fmt is None:
        raise InvalidRequest(
            f"tool_choice {request.tool_choice!r} needs a grammar for the {tool_call_parser!r} tool-call format, "
            "which is not built yet; use tool_choice 'auto'.",
            param="tool_choice",
        )
    for i, tool in enumerate(request.tools):
        name = (tool.get("function") or {}).get("name", "")
        if fmt.arguments is not None and not fmt.arguments.writes_function(name):
            raise InvalidRequest(
                f"The function name {name!r} cannot be written in a call of the {tool_call_parser!r} tool-call "
                "format so that its parser reads it back; rename it, or use tool_choice 'auto'.",
                param=f"tools[{i}].function.name",
            )
    if not constrains(backend, fmt):
        notation = fmt.arguments.notation if fmt.arguments else "JSON"
        if backend is None:
            raise InvalidRequest(
                f"tool_choice {request.tool_choice!r} needs a grammar for the {tool_call_parser!r} tool-call format, whose "
                f"{notation} arguments only the embedded engine's llguidance backend compiles; use tool_choice 'auto'.",
                param="tool_choice",
            )
        raise InvalidRequest(
            f"tool_choice {request.tool_choice!r} needs a grammar for the {tool_call_parser!r} tool-call format, whose "
            f"{notation} arguments the {backend.name} grammar backend does not compile; serve with "
            "--grammar-backend llguidance (the default), or use tool_choice 'auto'.",
            param="grammar_backend",
        )


def constrains(backend: GrammarBackend | None, fmt: ToolCallFormat) -> bool:
    """Whether ``backend`` (None: SGLang's) compiles ``fmt``'s tool-call constraint: every
    backend compiles JSON arguments, :meth:`GrammarBackend.compiles_arguments` says which
    other notations."""
    return fmt.arguments is None or (backend is not None and backend.compiles_arguments(fmt.arguments))
