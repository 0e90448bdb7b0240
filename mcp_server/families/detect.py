"""Which family a model belongs to, read from its own chat template.

Two steps, the first that answers wins:

1. **Render diff** (the idea of llama.cpp's ``common/chat-diff-analyzer.cpp``; our own code):
   render the template for one conversation twice, the last assistant turn once with a
   plain answer and once with a sample tool call, and look at what the call adds. The added
   text holds the family's call markers, so a template never seen before, written for a
   known syntax, still resolves; the markers are matched against the table's openers.
2. **Signatures** (the floor): fixed strings of :data:`~mcp_server.families.table.FAMILIES`
   that each family's template contains.

Whether the template opens a think block is then read from its generation prompt at run
time (:func:`~mcp_server.families.base.prompt_opens`), so it is not decided here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from mcp_server.families.table import FAMILIES, TOOL_CALL_PARSERS, Family

__all__ = ["SAMPLE_CALL", "SAMPLE_TOOL", "Detection", "detect"]

SAMPLE_TOOL = {
    "type": "function",
    "function": {
        "name": "chatcap_sample_weather",
        "description": "Weather of a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
"""A tool for rendering a template with; its name and :data:`SAMPLE_CALL`'s argument are
words no template writes on its own."""
SAMPLE_CALL = {
    "id": "call12345",  # 9 alphanumeric characters: Mistral's templates refuse other ids
    "type": "function",
    "function": {"name": "chatcap_sample_weather", "arguments": {"city": "Zanzibar"}},
}
"""An assistant's call of :data:`SAMPLE_TOOL`, arguments as an object (as templates take them)."""


@dataclass(frozen=True)
class Detection:
    """What :func:`detect` found.

    Attributes:
        tool_call_parser: a :data:`~mcp_server.families.table.TOOL_CALL_PARSERS` name, or None.
        reasoning_parser: a reasoning-parser name, or None.
        how: how it was found (``render diff``, ``template signature``, ``none``), for the log.
        family: the table row, when one matched.
    """

    tool_call_parser: str | None
    reasoning_parser: str | None
    how: str
    family: Family | None = None


def detect(template: str | None) -> Detection:
    """Detect the family of a chat template (Jinja source), or say that nothing determines it."""
    if not template:
        return Detection(None, None, "none")
    added = _render_diff(template)
    seen = [f for f in FAMILIES if added and any(opener.strip() in added for opener in _openers(f))]
    if seen:
        # The rows whose call markers the call added; of those, the most specific whose
        # signatures the template has, else the most generic (the table's last).
        family = next((f for f in seen if all(s in template for s in f.signatures)), seen[-1])
        return Detection(family.tool_call_parser, family.reasoning_parser, "render diff", family)
    for family in FAMILIES:
        if all(signature in template for signature in family.signatures):
            return Detection(family.tool_call_parser, family.reasoning_parser, "template signature", family)
    return Detection(None, None, "none")


def _openers(family: Family) -> tuple[str, ...]:
    syntax = TOOL_CALL_PARSERS[family.tool_call_parser]
    return tuple(o for o in syntax.openers if len(o) > 2) or family.signatures


def _render_diff(template: str) -> str:
    """Text a sample tool call adds to a rendered conversation ("" when it cannot be rendered)."""
    try:
        import jinja2.sandbox

        env = jinja2.sandbox.ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        env.filters["tojson"] = lambda value, **kw: json.dumps(value, ensure_ascii=False, **kw)
        compiled = env.from_string(template)

        def render(assistant: dict[str, Any]) -> str:
            messages = [{"role": "user", "content": "Weather in Zanzibar?"}, assistant]
            return compiled.render(
                messages=messages, tools=[SAMPLE_TOOL], add_generation_prompt=False, bos_token="", eos_token="",
                raise_exception=_raise,
            )

        plain = render({"role": "assistant", "content": "Sunny."})
        called = render({"role": "assistant", "content": "", "tool_calls": [SAMPLE_CALL]})
    except Exception:  # noqa: BLE001 - any template error: fall back to signatures
        return ""
    start = 0
    while start < min(len(plain), len(called)) and plain[start] == called[start]:
        start += 1
    return called[start:]


def _raise(message: str) -> None:
    raise ValueError(message)
