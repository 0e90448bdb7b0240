"""``pythonic``: Llama 4's Python-call list ``[f(a=1), g()]``, optionally between
``<|python_start|>`` and ``<|python_end|>`` (SGLang ``pythonic``, vLLM ``llama4_pythonic``)."""

from __future__ import annotations

import ast
import json

from mcp_server.families.arguments import ArgumentSyntax
from mcp_server.families.base import Block, Call, CallTemplate, Tools, ToolSyntax, balanced_end

__all__ = ["PYTHONIC"]

_START, _END = "<|python_start|>", "<|python_end|>"


def scan(text: str, final: bool, tools: Tools) -> Block | None:
    """A ``[call(...), ...]`` list at the start of ``text`` (after the optional start tag)."""
    pos = len(_START) if text.startswith(_START) else 0
    while pos < len(text) and text[pos] in " \t\r\n":
        pos += 1
    if pos == len(text):
        return None
    if text[pos] != "[":
        return Block((), len(_START) if pos else 1)
    end = balanced_end(text, pos, quotes="\"'")
    if end is None:
        return None
    calls = _calls(text[pos:end])
    if calls is None:
        return Block((), end)
    if text.startswith(_START):
        rest = text[end:].lstrip()
        if _END.startswith(rest) and not final:
            return None
        if rest.startswith(_END):
            end = text.index(_END, end) + len(_END)
    return Block(calls, end)


def _calls(source: str) -> tuple[Call, ...] | None:
    try:
        tree = ast.parse(source, mode="eval").body
    except (SyntaxError, ValueError):
        return None
    if not isinstance(tree, ast.List) or not tree.elts:
        return None
    calls = []
    for node in tree.elts:
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Name) or node.args:
            return None
        try:
            arguments = {kw.arg: ast.literal_eval(kw.value) for kw in node.keywords if kw.arg}
            calls.append(Call(node.func.id, json.dumps(arguments, ensure_ascii=False)))
        except (ValueError, TypeError):  # not a literal, or not JSON (a set, bytes)
            return None
    return tuple(calls)


PYTHONIC = ToolSyntax(
    "pythonic",
    (_START, "["),
    scan,
    template=CallTemplate("[{name}(", ")]", "[", "", arguments=ArgumentSyntax("python", "{key}=", separator=", ")),
)
"""Constrained calls are one list each (the parser reads consecutive lists)."""
