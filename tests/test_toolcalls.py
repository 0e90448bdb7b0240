"""Tool calling: every registry family x streamed / non-streamed, and its grammar constraint."""

from __future__ import annotations

import json

import pytest

from mcp_server.engines.base import GenerationRequest
from mcp_server.engines.embedded.decoding.toolcalls import FAMILIES, GrammarProvider, render_messages
from mcp_server.families import ArgumentsDelta, CallStart, TextDelta, make_splitter
from mcp_server.families import parse as parse_output
from mcp_server.errors import InvalidRequest

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"enum": ["c", "f"]}},
            "required": ["city"],
        },
    },
}
TIME = {"type": "function", "function": {"name": "get_time"}}
TOOLS = [WEATHER, TIME]
ARGS = '{"city":"Paris \\"}{","unit":"c"}'


PARAMETERS = {"get_weather": WEATHER["function"]["parameters"], "get_time": {}}


def parse(family, text: str):
    """``(content, calls)`` of a whole output, by the family table's parser of this format."""
    content, _, calls = parse_output(family.name, None, text, PARAMETERS)
    return content, [{"name": c.name, "arguments": c.arguments} for c in calls]


def run(family, text: str, streamed: bool):
    """Parse ``text`` whole or one character at a time; return (content, calls) and the events."""
    if not streamed:
        return parse(family, text), None
    parser = make_splitter(family.name, None, PARAMETERS)
    events = [e for ch in text for e in parser.feed(ch)] + parser.finish()
    content = "".join(e.text for e in events if isinstance(e, TextDelta)) or None
    calls = [{"name": e.name, "arguments": ""} for e in events if isinstance(e, CallStart)]
    for e in events:
        if isinstance(e, ArgumentsDelta):
            calls[e.index]["arguments"] += e.text
    return (content, calls), events


def grammar_accepts(backend, tokenizer, family, text, tool_choice="auto", parallel=True, tools=TOOLS) -> bool:
    """Whether the backend's grammar takes ``text`` token by token and then the end of the answer."""
    request = GenerationRequest(model="m", messages=[], tools=tools, tool_choice=tool_choice, parallel_tool_calls=parallel)
    matcher = backend.matcher(GrammarProvider(backend, family.name)(request, tokenizer))
    tokens = [*tokenizer.encode(text, add_special_tokens=False), tokenizer.eos_token_id]
    return all(matcher.accept(t) for t in tokens) and matcher.is_terminated()


@pytest.fixture(params=sorted(FAMILIES))
def family(request):
    return FAMILIES[request.param]


@pytest.fixture(params=[False, True], ids=["whole", "streamed"])
def streamed(request):
    return request.param


def test_parse_text_then_two_calls(family, streamed):
    text = "Let me check.\n" + family.call_text("get_weather", ARGS) + "\n" + family.call_text("get_time", "{}")
    (content, calls), _ = run(family, text, streamed)
    assert content == "Let me check."
    assert [(c["name"], json.loads(c["arguments"])) for c in calls] == [
        ("get_weather", json.loads(ARGS)),
        ("get_time", {}),
    ]
    assert json.loads(calls[0]["arguments"])["city"] == 'Paris "}{'


def test_parse_tolerates_spacing_and_keeps_raw_arguments(family, streamed):
    spaced = family.call_text("get_weather", '{"city": "Oslo"}').replace('{"name": ', '{ "name" :').replace(", ", " ,  ")
    (content, calls), _ = run(family, spaced, streamed)
    assert content is None
    assert calls == [{"name": "get_weather", "arguments": '{"city": "Oslo"}'}]  # JSON text, normalized


def test_text_that_is_not_a_call_stays_content(family, streamed):
    text = "use {x} or <tool_call> {b} and {\"name\": 3} <tool"
    assert run(family, text, streamed)[0] == (text, [])


def test_call_cut_by_the_end_of_the_output_is_dropped(family, streamed):
    text = "ok " + family.call_text("get_weather", '{"city":"Ro')[: -len(family.suffix) - 1 or None]
    assert run(family, text, streamed)[0] == ("ok ", [])  # spaces are text; line breaks next to calls are layout


def test_streamed_argument_pieces_concatenate_to_the_whole_arguments(family):
    text = "Hi " + family.call_text("get_weather", ARGS)
    (_, calls), events = run(family, text, streamed=True)
    pieces = [e.text for e in events if isinstance(e, ArgumentsDelta)]
    assert "".join(pieces) == parse(family, text)[1][0]["arguments"] == calls[0]["arguments"]


def test_constraint_accepts_valid_calls(grammar_backend, tokenizer, family):
    call = family.call_text("get_weather", '{"city":"Paris","unit":"f"}')
    assert grammar_accepts(grammar_backend, tokenizer, family, call, "required")
    assert grammar_accepts(grammar_backend, tokenizer, family, "Sure. " + call, "auto")
    assert grammar_accepts(grammar_backend, tokenizer, family, "Just text.", "auto")
    assert grammar_accepts(grammar_backend, tokenizer, family, call + "\n" + family.call_text("get_time", "{}"), "required")
    named = {"type": "function", "function": {"name": "get_time"}}
    assert grammar_accepts(grammar_backend, tokenizer, family, family.call_text("get_time", "{}"), named)


def test_constraint_rejects_bad_calls(grammar_backend, tokenizer, family):
    assert not grammar_accepts(grammar_backend, tokenizer, family, family.call_text("delete_all", "{}"), "required")
    assert not grammar_accepts(grammar_backend, tokenizer, family, family.call_text("get_weather", '{"unit":"c"}'), "required")
    assert not grammar_accepts(grammar_backend, tokenizer, family, family.call_text("get_weather", '{"city":1}'), "auto")
    assert not grammar_accepts(grammar_backend, tokenizer, family, family.call_text("get_time", '{"x":1}'), "required")
    assert not grammar_accepts(grammar_backend, tokenizer, family, "Just text.", "required")
    named = {"type": "function", "function": {"name": "get_time"}}
    assert not grammar_accepts(grammar_backend, tokenizer, family, family.call_text("get_weather", '{"city":"x"}'), named)
    two = family.call_text("get_time", "{}") + "\n" + family.call_text("get_time", "{}")
    assert not grammar_accepts(grammar_backend, tokenizer, family, two, "required", parallel=False)


@pytest.mark.parametrize("parallel", [True, False])
def test_required_and_named_choice_allow_calls_only(grammar_backend, tokenizer, family, parallel):
    call = family.call_text("get_time", "{}")
    named = {"type": "function", "function": {"name": "get_time"}}
    for choice in ("required", named):
        assert grammar_accepts(grammar_backend, tokenizer, family, call, choice, parallel=parallel)
        assert not grammar_accepts(grammar_backend, tokenizer, family, call + " Done.", choice, parallel=parallel)
        assert not grammar_accepts(grammar_backend, tokenizer, family, call + "\nThe time is noon.", choice, parallel=parallel)
    if parallel:
        assert grammar_accepts(grammar_backend, tokenizer, family, call + " Done.", "auto")


def test_constraint_errors_name_the_param(grammar_backend, family):
    with pytest.raises(InvalidRequest) as caught:
        family.constraint(TOOLS, {"type": "function", "function": {"name": "nope"}}, True, grammar_backend.check_json_schema)
    assert caught.value.param == "tool_choice"
    bad = [TIME, {"type": "function", "function": {"name": "x", "parameters": {"type": "object", "not": {}}}}]
    with pytest.raises(InvalidRequest) as caught:
        family.constraint(bad, "auto", True, grammar_backend.check_json_schema)
    assert caught.value.param == "tools[1].function.parameters"
    assert family.constraint(TOOLS, "none", True, grammar_backend.check_json_schema) is None


def test_provider_uses_response_format_without_tools_and_caches(grammar_backend, tokenizer):
    provider = GrammarProvider(grammar_backend, "hermes")
    request = GenerationRequest(model="m", messages=[], response_format={"type": "json_object"})
    assert provider(request, tokenizer) is provider(request, tokenizer)
    assert provider(GenerationRequest(model="m", messages=[]), tokenizer) is None
    assert provider(GenerationRequest(model="m", messages=[], tools=TOOLS, tool_choice="none"), tokenizer) is None
    with pytest.raises(ValueError, match="known"):
        GrammarProvider(grammar_backend, "nope")


def test_render_messages_for_templates_without_tools(family):
    call = {"id": "c1", "type": "function", "function": {"name": "get_time", "arguments": "{}"}}
    messages = [
        {"role": "user", "content": "time?"},
        {"role": "assistant", "content": None, "tool_calls": [call, call]},
        {"role": "tool", "tool_call_id": "c1", "content": "12:00"},
        {"role": "tool", "tool_call_id": "c1", "content": "12:01"},
    ]
    rendered = render_messages(family, messages, TOOLS)
    assert rendered[0]["role"] == "system" and '"name": "get_weather"' in rendered[0]["content"]
    assert rendered[2] == {"role": "assistant", "content": family.call_text("get_time", "{}") + "\n" + family.call_text("get_time", "{}")}
    assert parse(family, rendered[2]["content"])[1] == [{"name": "get_time", "arguments": "{}"}] * 2
    assert len(rendered) == 4 and "12:00" in rendered[3]["content"] and "12:01" in rendered[3]["content"]
    assert all(isinstance(m["content"], str) for m in rendered)
