"""Replaying the canitoolcall corpus through SGLang's own parsers (its ``FunctionCallParser``
and ``ReasoningParser``), for ``benchmarks/bench_toolcalls.py``'s SGLang column.

The parser names are the ones our family table gives each fixture's model
(:data:`toolcall_corpus.MODEL_FORMATS`; they are SGLang's names). The order is SGLang's
``/v1/chat/completions`` serving layer (``serving_chat.py``): the reasoning parser first
(``force_reasoning`` when the fixture's generation prompt opened the think block, the same
fact our parser is given), then the tool-call parser on the normal text;
non-streamed ``parse_non_stream``, streamed ``parse_stream_chunk`` per piece with
``parse_stream_end`` on the last. gpt-oss output gets back the ``<|call|>`` that SGLang's
detokenizer keeps (canitoolcall's ``harmony_stop_token``). What SGLang's server adds around
the parsers (detokenization by tokens, ``_check_for_unstreamed_tool_args``) needs the
models' tokenizers, which cannot be downloaded here: the splits are by characters, as for ours.

:func:`sglang_version` is None when SGLang is not importable; the benchmark then says so.
"""

from __future__ import annotations

import importlib
import uuid
from typing import Any

from canitoolcall.adapters.sglang import HARMONY_CALL, harmony_stop_token
from canitoolcall.fixtures import Fixture
from canitoolcall.results import ParseResult, StreamAccumulator

from mcp_server.families import REASONING_PARSERS, prompt_opens

__all__ = ["replay_sglang", "sglang_version"]


def sglang_version() -> str | None:
    """SGLang's version when its parsers import here, else None."""
    try:
        importlib.import_module("sglang.srt.function_call.function_call_parser")
        importlib.import_module("sglang.srt.parser.reasoning_parser")
        return str(importlib.import_module("sglang").__version__)
    except ImportError:
        return None


def replay_sglang(
    fixture: Fixture, prompt: str, pieces: list[str], formats: tuple[str | None, str | None]
) -> ParseResult:
    """Run ``pieces`` (the output, whole or split) through SGLang's parsers; the parse a client sees.

    Args:
        fixture: the corpus case (its tools; ``truncated``: no stop token kept).
        prompt: the generation prompt (whether it opened the think block).
        pieces: the output: one piece (non-streamed) or its split (streamed).
        formats: ``(tool_call_parser, reasoning_parser)``, SGLang names.

    Raises:
        ValueError: (``unknown ...``) SGLang has no parser of that name: unsupported.
    """
    fcp = importlib.import_module("sglang.srt.function_call.function_call_parser")
    rpm = importlib.import_module("sglang.srt.parser.reasoning_parser")
    protocol = importlib.import_module("sglang.srt.entrypoints.openai.protocol")
    tool_name, reasoning_name = formats
    if tool_name not in fcp.FunctionCallParser.ToolCallParserEnum:
        raise ValueError(f"unknown SGLang tool-call parser {tool_name!r}")
    if reasoning_name is not None and reasoning_name not in rpm.ReasoningParser.DetectorMap:
        raise ValueError(f"unknown SGLang reasoning parser {reasoning_name!r}")
    pieces = list(pieces) or [""]
    if tool_name == "gpt-oss" and not fixture.truncated and harmony_stop_token(fixture.raw_output) == HARMONY_CALL:
        pieces[-1] += HARMONY_CALL
    tools = [protocol.Tool.model_validate(tool) for tool in fixture.tools]
    forced = bool(reasoning_name in REASONING_PARSERS and prompt_opens(REASONING_PARSERS[reasoning_name], prompt))
    reasoning = (
        rpm.ReasoningParser(reasoning_name, stream_reasoning=True, force_reasoning=forced, tool_call_parser_active=bool(tools))
        if reasoning_name
        else None
    )
    calls = fcp.FunctionCallParser(tools, tool_name) if tools else None
    accumulator = StreamAccumulator()
    try:
        if len(pieces) == 1:
            _whole(pieces[0], reasoning, calls, accumulator)
        else:
            for index, piece in enumerate(pieces):
                _step(piece, index == len(pieces) - 1, reasoning, calls, accumulator)
    except Exception as error:  # noqa: BLE001 - SGLang's parser raising is an outcome (canitoolcall's rule)
        return accumulator.result(exception=f"{type(error).__name__}: {error}")
    return accumulator.result()


def _whole(text: str, reasoning: Any, calls: Any, accumulator: StreamAccumulator) -> None:
    """``_build_chat_response``: reasoning parsed off, then calls from the normal text."""
    if reasoning is not None:
        reasoning_text, text = reasoning.parse_non_stream(text)
        accumulator.add_reasoning(reasoning_text)
    if calls is not None and calls.has_tool_call(text or ""):
        text, items = calls.parse_non_stream(text or "")
        for item in items:
            accumulator.append_tool_call(item.name or "", item.parameters)
    accumulator.add_content(text)


def _step(piece: str, last: bool, reasoning: Any, calls: Any, accumulator: StreamAccumulator) -> None:
    """One streamed step: ``_process_reasoning_stream`` then ``_process_tool_call_stream``."""
    text = piece
    if reasoning is not None:
        reasoning_text, text = reasoning.parse_stream_chunk(piece)
        if last:
            end_reasoning, end_text = reasoning.parse_stream_end()
            reasoning_text, text = (reasoning_text or "") + (end_reasoning or ""), (text or "") + (end_text or "")
        accumulator.add_reasoning(reasoning_text)
    if calls is None:
        accumulator.add_content(text)
        return
    normal, items = calls.parse_stream_chunk(text or "")
    if last:
        end_text, end_items = calls.parse_stream_end()
        normal, items = (normal or "") + (end_text or ""), [*items, *end_items]
    accumulator.add_content(normal)
    for item in items:
        accumulator.add_openai_delta(
            {"tool_calls": [{"index": item.tool_index, "id": f"call_{uuid.uuid4().hex[:8]}" if item.name else None,
                             "function": {"name": item.name, "arguments": item.parameters}}]}
        )
