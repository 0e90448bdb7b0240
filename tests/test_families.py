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


def _pieces_agree(tool_call_parser, reasoning_parser, text, tools):
    """Every split into pieces of 1-7 characters parses as the whole text does; returns the parse."""
    whole = parse(tool_call_parser, reasoning_parser, text, tools)
    for size in range(1, 8):
        splitter = make_splitter(tool_call_parser, reasoning_parser, tools)
        events = [e for i in range(0, len(text), size) for e in splitter.feed(text[i : i + size])] + splitter.finish()
        assert collect(events) == whole, size
    return whole


WRITE = {"write": {"type": "object", "properties": {"path": {"type": "string"}, "text": {"type": "string"}}}}


@pytest.mark.parametrize(
    ("parser", "begin", "sep", "end", "close"),
    [
        ("kimi_k2", "<|tool_calls_section_begin|><|tool_call_begin|>functions.write:0", "<|tool_call_argument_begin|>",
         "<|tool_call_end|>", "<|tool_calls_section_end|>"),
        ("deepseekv31", "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>write", "<｜tool▁sep｜>", "<｜tool▁call▁end｜>", "<｜tool▁calls▁end｜>"),
    ],
)
def test_a_call_end_marker_inside_a_json_string_is_text(parser, begin, sep, end, close):
    arguments = {"path": "a.md", "text": f'the call ends with {end}, "quoted" \\ too'}
    result = _pieces_agree(parser, None, f"Writing.{begin}{sep}{json.dumps(arguments, ensure_ascii=False)}{end}{close}", WRITE)
    assert result[:2] == ("Writing.", None) and calls(result) == [("write", arguments)]


def test_kimi_text_between_section_markers_is_dropped_not_content():
    text = (
        "Checking. <|tool_calls_section_begin|> stray words <|tool_call_begin|>functions.get_weather:0"
        '<|tool_call_argument_begin|>{"city": "Oslo"}<|tool_call_end|> more <|tool_calls_section_end|>'
    )
    result = _pieces_agree("kimi_k2", "kimi", text, TOOLS)
    assert result[:2] == ("Checking. ", None) and calls(result) == [("get_weather", {"city": "Oslo"})]


def test_kimi_k3_closing_tag_text_inside_a_value_is_part_of_the_value():
    value = "a value may say <|close|>argument<|sep|> and go on"
    text = (
        '<|open|>tools<|sep|><|open|>call tool="write" index="1"<|sep|>'
        '<|open|>argument key="path" type="string"<|sep|>a.md<|close|>argument<|sep|>'
        f'<|open|>argument key="text" type="string"<|sep|>{value}<|close|>argument<|sep|>'
        "<|close|>call<|sep|><|close|>tools<|sep|><|close|>message<|sep|>"
    )
    result = _pieces_agree("kimi_k3", "kimi_k3", text, WRITE)
    assert result[:2] == (None, None) and calls(result) == [("write", {"path": "a.md", "text": value})]


def test_magistral_2506_thinks_in_plain_think_tags():
    from mcp_server.families.detect import detect

    # Magistral 2506's template: its default system prompt asks for <think> tags; calls are [TOOL_CALLS].
    template = (
        "{{ '[SYSTEM_PROMPT]Draft your thinking between <think> and </think>.[/SYSTEM_PROMPT]' }}"
        "{% for m in messages %}{% if m.tool_calls %}{% for c in m.tool_calls %}"
        "[TOOL_CALLS]{{ c.function.name }}[ARGS]{{ c.function.arguments | tojson }}{% endfor %}"
        "{% else %}{{ m.content }}{% endif %}{% endfor %}"
    )
    found = detect(template)
    assert (found.tool_call_parser, found.reasoning_parser) == ("mistral", "qwen3")
    result = _pieces_agree("mistral", "qwen3", '<think>Weather: call it.</think>[TOOL_CALLS]get_weather[ARGS]{"city": "Oslo"}', TOOLS)
    assert result[:2] == (None, "Weather: call it.") and calls(result) == [("get_weather", {"city": "Oslo"})]


def test_gemma4_whitespace_inside_the_braces_is_layout():
    # xgrammar's "gemma" style (the xgrammar backend's constraint for gemma4) allows it.
    text = '<|tool_call>call:get_time{\n \n}<tool_call|><|tool_call>call:get_weather{ city:<|"|>Paris<|"|> ,\n}<tool_call|>'
    result = parse("gemma4", None, text, TOOLS)
    assert result[0] is None and calls(result) == [("get_time", {}), ("get_weather", {"city": "Paris"})]
