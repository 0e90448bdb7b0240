"""OpenAI request strictness, through the live server and the official ``openai`` client.

What the OpenAI API and vLLM refuse is refused here with a 400 naming the field; the nulls
that real clients send for "absent" (the ``openai`` SDK's ``model_dump()`` of an earlier
answer, LangChain and MCP adapters' tool definitions) are accepted.
"""

from __future__ import annotations

import openai
import pytest

MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
USER = [{"role": "user", "content": "What is the weather in Paris?"}]
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": None,
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"stream_options": {"include_usage": True}}, "stream_options"),
        ({"stream": False, "stream_options": {"include_usage": True}}, "stream_options"),
        ({"tool_choice": "auto"}, "tool_choice"),
        ({"tool_choice": "none"}, "tool_choice"),
        ({"tool_choice": "required"}, "tool_choice"),
        ({"tool_choice": {"type": "function", "function": {"name": "get_weather"}}}, "tool_choice"),
    ],
)
def test_option_without_its_companion_is_400(client, extra, param):
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=MODEL, messages=USER, max_tokens=4, **extra)
    assert caught.value.body["param"] == param
    assert param in caught.value.body["message"]


def test_client_nulls_are_accepted_as_absent(client):
    """A null tool description and an earlier answer sent back with ``model_dump()``."""
    first = client.chat.completions.create(
        model=MODEL, messages=USER, tools=[WEATHER], tool_choice="required", temperature=0, max_tokens=48
    )
    assert first.choices[0].message.tool_calls
    echoed = first.choices[0].message.model_dump()  # tool_calls, refusal, audio, function_call ... with nulls
    plain = client.chat.completions.create(model=MODEL, messages=USER, max_tokens=8, temperature=0)
    history = USER + [plain.choices[0].message.model_dump(), {"role": "user", "content": "And in Rome?", "name": None}]
    again = client.chat.completions.create(
        model=MODEL, messages=history, tools=[WEATHER], tool_choice="auto", max_tokens=8, temperature=0,
        stream=True, stream_options={"include_usage": None},
    )
    assert [chunk for chunk in again]
    assert echoed["tool_calls"][0]["function"]["name"] == "get_weather"


@pytest.mark.parametrize(
    ("choice", "parallel"),
    [("required", None), ("required", False), ({"type": "function", "function": {"name": "get_time"}}, None)],
)
def test_forced_tool_choice_answers_with_calls_only(client, choice, parallel):
    tools = [WEATHER, {"type": "function", "function": {"name": "get_time", "description": "Current time"}}]
    extra = {} if parallel is None else {"parallel_tool_calls": parallel}
    for prompt in ("What is the weather in Paris and the time?", "hi"):
        completion = client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": prompt}], tools=tools, tool_choice=choice,
            temperature=0, max_tokens=200, **extra,
        )
        answer = completion.choices[0]
        # OpenAI ends an answer forced to one named function with "stop"; required keeps "tool_calls".
        assert answer.finish_reason == ("stop" if isinstance(choice, dict) else "tool_calls"), answer
        assert answer.message.content is None, answer.message.content
        assert answer.message.tool_calls
        if parallel is False or isinstance(choice, dict):
            assert len(answer.message.tool_calls) == 1


def test_top_logprobs_zero_without_logprobs_asks_for_nothing_and_is_accepted():
    from mcp_server.protocol.request import parse_request

    request = parse_request({"messages": USER, "logprobs": False, "top_logprobs": 0})
    assert (request.generation.logprobs, request.generation.top_logprobs) == (False, 0)
