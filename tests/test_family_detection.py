"""Which family a served model is: detection from its chat template, the flags that override
it, the start-up log line, and the 400 for tools on a model nothing determines."""

from __future__ import annotations

import logging

import pytest

from mcp_server.catalog import default_entry
from mcp_server.engines.base import GenerationRequest
from mcp_server.engines.embedded.engine import EmbeddedEngine
from mcp_server.engines.embedded.decoding.toolcalls.support import check_tools_allowed
from mcp_server.engines.embedded.family import resolve_family
from mcp_server.errors import InvalidRequest
from mcp_server.families.detect import detect

# Minimal templates in each family's style (written for these tests): each renders an
# assistant tool call the way that family's models were trained to write it.
CALL_LOOP = "{% for m in messages %}{% if m.tool_calls %}{% for c in m.tool_calls %}"
END_LOOP = "{% endfor %}{% else %}{{ m.content }}{% endif %}{% endfor %}"
TEMPLATES = {
    "hermes": CALL_LOOP + "<tool_call>\n{{ {'name': c.function.name, 'arguments': c.function.arguments} | tojson }}\n</tool_call>" + END_LOOP,
    "qwen3_coder": CALL_LOOP + "<tool_call>\n<function={{ c.function.name }}>\n{% for k, v in c.function.arguments.items() %}<parameter={{ k }}>\n{{ v }}\n</parameter>\n{% endfor %}</function>\n</tool_call>" + END_LOOP,
    "mistral": CALL_LOOP + "[TOOL_CALLS]{{ c.function.name }}[ARGS]{{ c.function.arguments | tojson }}" + END_LOOP,
    "kimi_k2": CALL_LOOP + "<|tool_calls_section_begin|><|tool_call_begin|>functions.{{ c.function.name }}:0<|tool_call_argument_begin|>{{ c.function.arguments | tojson }}<|tool_call_end|><|tool_calls_section_end|>" + END_LOOP,
    "gemma4": CALL_LOOP + "<|tool_call>call:{{ c.function.name }}{}<tool_call|>" + END_LOOP,
}


@pytest.mark.parametrize("expected", sorted(TEMPLATES))
def test_render_diff_finds_the_format_a_template_writes(expected):
    found = detect(TEMPLATES[expected])
    assert (found.tool_call_parser, found.how) == (expected, "render diff")


def test_signatures_are_the_floor_when_a_template_does_not_render():
    broken = "{{ raise_exception('no') }} <|python_tag|> {% if"  # a syntax error: only signatures remain
    assert (detect(broken).tool_call_parser, detect(broken).how) == ("llama3", "template signature")


def test_a_template_without_tool_calls_determines_nothing():
    found = detect("{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}")
    assert (found.tool_call_parser, found.reasoning_parser, found.how) == (None, None, "none")


def test_flags_win_then_the_catalog_then_detection(tokenizer, caplog):
    caplog.set_level(logging.INFO, logger="mcp_server.engines.embedded.family")
    assert resolve_family("mistral", "mistral", default_entry(), tokenizer) == ("mistral", "mistral")
    assert "tool calls mistral (--tool-call-parser), reasoning mistral (--reasoning-parser)" in caplog.text
    # SmolLM2's ChatML template writes no tool calls: the bundled model's catalog entry names hermes.
    assert resolve_family(None, None, default_entry(), tokenizer) == ("hermes", None)
    assert "tool calls hermes (catalog)" in caplog.text


def test_an_undetermined_model_warns_naming_the_flag_and_refuses_tools(tokenizer, caplog):
    assert resolve_family(None, None, None, tokenizer) == (None, None)
    assert "--tool-call-parser" in caplog.text and caplog.records[-1].levelno == logging.WARNING
    tools = [{"type": "function", "function": {"name": "f"}}]
    with pytest.raises(InvalidRequest, match="--tool-call-parser") as refused:
        check_tools_allowed(GenerationRequest(model="m", messages=[], tools=tools), None)
    assert refused.value.param == "tools"
    check_tools_allowed(GenerationRequest(model="m", messages=[], tools=tools, tool_choice="none"), None)


def test_unknown_parser_flags_are_a_clear_error_before_loading():
    with pytest.raises(InvalidRequest, match="known: .*hermes") as caught:
        EmbeddedEngine(tool_call_parser="hermez")
    assert caught.value.param == "tool_call_parser"
    with pytest.raises(InvalidRequest) as caught:
        EmbeddedEngine(reasoning_parser="r2")
    assert caught.value.param == "reasoning_parser"
