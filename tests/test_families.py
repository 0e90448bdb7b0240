"""The family table's parsers: the defects issue 16 found, each reproduced with ``parse``,
and streamed pieces joining to the whole-output result."""

from __future__ import annotations

import json

import pytest

from mcp_server.families import FAMILIES, REASONING_PARSERS, TOOL_CALL_PARSERS, make_splitter, parse
from mcp_server.families.base import collect

TOOLS = {"get_weather": {"type": "object", "properties": {"city": {"type": "string"}}}}


def calls(result):
    return [(call.name, json.loads(call.arguments)) for call in result[2]]


@pytest.mark.parametrize(
    "text",
    [
        '{"name": "get_weather", "arguments": {"city": "Tokyo"}}',
        '{"type": "function", "name": "get_weather", "parameters": {"city": "Tokyo"}}',
        '<|python_tag|>{"name": "get_weather", "parameters": {"city": "Tokyo"}}',
    ],
    ids=["arguments-key", "type-function", "python-tag"],
)
def test_llama3_reads_every_shape_meta_documents(text):
    result = parse("llama3", None, text, TOOLS)
    assert result[0] is None and calls(result) == [("get_weather", {"city": "Tokyo"})]


@pytest.mark.parametrize(
    "body",
    ['{"arguments": {"city": "Tokyo"}, "name": "get_weather"}', '{"name": "get_weather", "arguments": {"city": "Tokyo"}, "id": 0}'],
    ids=["arguments-first", "extra-key"],
)
def test_hermes_takes_any_key_order_and_ignores_extra_keys(body):
    result = parse("hermes", None, f"<tool_call>\n{body}\n</tool_call>", TOOLS)
    assert result[0] is None and calls(result) == [("get_weather", {"city": "Tokyo"})]


def test_reasoning_parser_is_told_whether_the_prompt_opened_think():
    opened = parse("hermes", "qwen3", "Let me see.\n</think>\n\nIt is sunny.", TOOLS, prompt="<|im_start|>assistant\n<think>\n")
    assert opened[:2] == ("It is sunny.", "Let me see.")
    closed = parse("hermes", "qwen3", "It is sunny.", TOOLS, prompt="<|im_start|>assistant\n<think>\n\n</think>\n\n")
    assert closed[:2] == ("It is sunny.", None)


def test_deepseek_r1_call_without_thinking_is_a_call():
    text = '<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather\n```json\n{"city": "Tokyo"}\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜>'
    for prompt in ("<｜Assistant｜>", "<｜Assistant｜><think>\n"):
        result = parse("deepseekv3", "deepseek-r1", text, TOOLS, prompt=prompt)
        assert result[:2] == (None, None) and calls(result) == [("get_weather", {"city": "Tokyo"})]


def test_trailing_newline_before_end_of_thinking_is_not_reasoning():
    result = parse("hermes", "qwen3", "<think>\nI should check.\n</think>\n\nSunny.", TOOLS)
    assert result[:2] == ("Sunny.", "I should check.")


def test_cut_call_gives_no_call_and_no_markup():
    result = parse("hermes", None, 'Checking.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Par', TOOLS)
    assert result == ("Checking.", None, [])


@pytest.mark.parametrize("size", [1, 2, 3, 7])
def test_streamed_pieces_join_to_the_whole_result(size):
    text = '<think>hm</think>Sure. <tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>'
    splitter = make_splitter("hermes", "qwen3", TOOLS)
    events = [e for i in range(0, len(text), size) for e in splitter.feed(text[i : i + size])] + splitter.finish()
    assert collect(events) == parse("hermes", "qwen3", text, TOOLS)


def test_every_family_row_names_known_parsers():
    for family in FAMILIES:
        assert family.tool_call_parser in TOOL_CALL_PARSERS
        assert family.reasoning_parser is None or family.reasoning_parser in REASONING_PARSERS


def test_unknown_names_are_refused_with_the_known_ones():
    with pytest.raises(ValueError, match="known: .*hermes"):
        make_splitter("nope", None, None)
