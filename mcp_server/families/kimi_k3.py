"""``kimi_k3``: Kimi K3's XTML control tokens (SGLang ``kimi_k3``)::

    <|open|>think<|sep|>...<|close|>think<|sep|>          (reasoning; the prompt opens it)
    <|open|>response<|sep|>answer<|close|>response<|sep|>  (content)
    <|open|>tools<|sep|><|open|>call tool="f" index="1"<|sep|>
    <|open|>argument key="city" type="string"<|sep|>Paris<|close|>argument<|sep|>
    <|close|>call<|sep|><|close|>tools<|sep|><|close|>message<|sep|>

Attribute values are XML-escaped; ``type="string"`` values are raw text, other types JSON.
Values are not escaped, so a closing tag's text inside one is told from the real tag by what
follows it (another tag, or the end of its parent).
At the end of the output, the complete calls of a cut tools element are kept.
"""

from __future__ import annotations

import html
import re

from mcp_server.families.arguments import ArgumentSyntax
from mcp_server.families.base import Block, Call, CallTemplate, ReasoningFormat, Tools, ToolSyntax
from mcp_server.families.xmlargs import arguments_text

__all__ = ["KIMI_K3", "KIMI_K3_REASONING"]

_OPEN, _CLOSE = "<|open|>tools<|sep|>", "<|close|>tools<|sep|>"
# A closing tag is real only where a tag or the end of the parent follows it: a value may
# hold the closing tag's text (the model's tokenizer writes it as ordinary tokens, identical
# in text) followed by more of the value.
_CALL = re.compile(
    r'<\|open\|>call tool="([^"]*)"[^<]*?<\|sep\|>(.*?)<\|close\|>call<\|sep\|>(?=\s*(?:<\||\Z))', re.DOTALL
)
_ARGUMENT = re.compile(
    r'<\|open\|>argument key="([^"]*)"(?: type="([^"]*)")?[^<]*?<\|sep\|>(.*?)<\|close\|>argument<\|sep\|>'
    r"(?=\s*(?:<\||\Z))",
    re.DOTALL,
)

KIMI_K3_REASONING = ReasoningFormat("kimi_k3", start="<|open|>think<|sep|>", end="<|close|>think<|sep|>")


def scan(text: str, final: bool, tools: Tools) -> Block | None:
    """One ``<|open|>tools<|sep|>`` element."""
    close = text.find(_CLOSE)
    if close < 0 and not final:
        return None
    body = text[len(_OPEN) : close if close >= 0 else len(text)]
    calls = tuple(_call(match, tools) for match in _CALL.finditer(body))
    if close < 0:
        return Block(calls, len(text)) if calls else None
    return Block(calls, close + len(_CLOSE), empty=True)


def _call(match: re.Match[str], tools: Tools) -> Call:
    name = html.unescape(match.group(1))
    pairs = [(html.unescape(key), value, kind == "string" if kind else None) for key, kind, value in _ARGUMENT.findall(match.group(2))]
    return Call(name, arguments_text(tools, name, pairs))


KIMI_K3 = ToolSyntax(
    "kimi_k3",
    (_OPEN,),
    scan,
    ends_reasoning=True,
    drop=("<|open|>response<|sep|>", "<|close|>response<|sep|>", "<|close|>message<|sep|>"),
    template=CallTemplate(
        _OPEN + '<|open|>call tool="{name}"<|sep|>',
        "<|close|>call<|sep|>" + _CLOSE,
        _OPEN,
        "",
        arguments=ArgumentSyntax(
            "tagged", '<|open|>argument key="{key}" type="{type}"<|sep|>', "<|close|>argument<|sep|>", forbidden=("<|close|>",)
        ),
    ),
)
"""Constrained calls are one tools element each (the parser reads consecutive elements)."""
