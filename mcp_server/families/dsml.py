"""``deepseekv32`` / ``deepseekv4`` / ``deepseekv41``: DeepSeek's DSML markup (SGLang names)::

    <｜DSML｜function_calls>            (V3.2; V4: tool_calls; V4.1: "<｜DSML｜ calls>")
    <｜DSML｜invoke name="get_weather">
    <｜DSML｜parameter name="city" string="true">Paris</｜DSML｜parameter>
    </｜DSML｜invoke>
    </｜DSML｜function_calls>

``string="true"`` values are raw text, others JSON; ``<｜DSML｜invoke name="f"/>`` has no
arguments. At the end of the output, the complete invokes of a cut block are kept.
"""

from __future__ import annotations

import re

from mcp_server.families.arguments import ArgumentSyntax
from mcp_server.families.base import Block, Call, CallTemplate, Tools, ToolSyntax
from mcp_server.families.xmlargs import arguments_text

__all__ = ["DSML", "dsml"]

_OPEN = "<｜DSML｜"
_HEADER = re.compile(r"<｜DSML｜ ?(function_calls|tool_calls|calls)>")
_INVOKE = re.compile(
    r'<｜DSML｜ ?invoke name="([^"]*)"\s*(?:/>|>(.*?)</｜DSML｜ ?invoke>)', re.DOTALL
)
_PARAMETER = re.compile(
    r'<｜DSML｜ ?parameter name="([^"]*)"(?: string="(true|false)")?\s*>(.*?)</｜DSML｜ ?parameter>', re.DOTALL
)


def scan(text: str, final: bool, tools: Tools) -> Block | None:
    """One DSML call block."""
    header = _HEADER.match(text)
    if header is None:
        longest = max(len(f"<｜DSML｜ {kind}>") for kind in ("function_calls", "tool_calls", "calls"))
        return None if len(text) < longest and not final and ">" not in text else Block((), len(_OPEN))
    close = re.compile(rf"</｜DSML｜ ?{header.group(1)}>").search(text, header.end())
    if close is None and not final:
        return None
    body = text[header.end() : close.start() if close else len(text)]
    calls = tuple(
        Call(m.group(1), arguments_text(tools, m.group(1), _parameters(m.group(2) or ""))) for m in _INVOKE.finditer(body)
    )
    if close is None:
        return Block(calls, len(text)) if calls else None
    return Block(calls, close.end())


def _parameters(body: str) -> list[tuple[str, str, bool | None]]:
    return [(m.group(1), m.group(3), None if m.group(2) is None else m.group(2) == "true") for m in _PARAMETER.finditer(body)]


def dsml(name: str, block: str) -> ToolSyntax:
    """The DSML syntax of ``name`` whose call block is named ``block`` (``function_calls``;
    with a leading space, V4.1's spelling, every tag has one)."""
    tag = "<｜DSML｜" + (" " if block.startswith(" ") else "")
    close = "</｜DSML｜" + (" " if block.startswith(" ") else "")
    return ToolSyntax(
        name,
        (_OPEN,),
        scan,
        ends_reasoning=True,
        template=CallTemplate(
            f'{tag}{block.strip()}>\n{tag}invoke name="{{name}}">\n',
            f"{close}invoke>\n{close}{block.strip()}>",
            f"{tag}{block.strip()}>",
            arguments=ArgumentSyntax(
                "tagged", f'{tag}parameter name="{{key}}" string="{{string}}">', f"{close}parameter>\n", forbidden=("</｜DSML｜",),
                xgrammar_style="deepseek_v4_1_xml" if block.startswith(" ") else "deepseek_xml",
            ),
        ),
    )


DSML = dsml("deepseekv32", "function_calls")
