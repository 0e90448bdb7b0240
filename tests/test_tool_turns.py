"""How a tool-calling answer ends, on the bundled model through the live server.

- ``tool_choice: "required"`` without ``max_tokens`` ends after the calls: a call that repeats
  an earlier one ends the answer (the bundled model used to repeat its call until the
  context was full: 600+ tokens for "What time is it?" with a weather tool).
- A call cut by ``max_tokens`` is not returned: no ``tool_calls`` entry, no markup in
  ``content``, ``finish_reason: "length"``; streamed and non-streamed alike.
"""

from __future__ import annotations

import asyncio
import json

import openai
import pytest

from tests.conftest import API_KEY

MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Get the current weather in a city",
    "parameters": {"type": "object", "properties": {
        "city": {"type": "string"}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
        "required": ["city"]}}}
TIME = {"type": "function", "function": {
    "name": "get_time", "description": "Current time",
    "parameters": {"type": "object", "properties": {"timezone": {"type": "string"}}}}}
PROMPTS = ("What time is it?", "What's the weather like in Paris today?", "Hello")


def test_required_without_max_tokens_ends_after_the_calls(server):
    async def main():
        async with openai.AsyncOpenAI(base_url=f"{server.base_url}/v1", api_key=API_KEY) as client:
            return await asyncio.gather(*(
                client.chat.completions.create(
                    model=MODEL, messages=[{"role": "user", "content": prompt}], tools=tools,
                    tool_choice="required", temperature=0,
                )
                for prompt in PROMPTS for tools in ([WEATHER], [WEATHER, TIME])
            ))

    for completion in asyncio.run(main()):
        choice = completion.choices[0]
        calls = [(c.function.name, c.function.arguments) for c in choice.message.tool_calls or ()]
        print(completion.usage.completion_tokens, calls)
        assert choice.finish_reason == "tool_calls" and choice.message.content is None, choice
        assert completion.usage.completion_tokens < 300, (completion.usage, calls)
        assert calls and len(set(calls)) == len(calls), calls
        for _, arguments in calls:
            json.loads(arguments)


def stream_and_whole(client, **kwargs):
    whole = client.chat.completions.create(**kwargs)
    content, calls, finish = "", [], None
    for chunk in client.chat.completions.create(**kwargs, stream=True):
        for choice in chunk.choices:
            content += choice.delta.content or ""
            calls += choice.delta.tool_calls or ()
            finish = choice.finish_reason or finish
    return whole.choices[0], content, calls, finish


@pytest.mark.parametrize("max_tokens", [2, 6, 14, 22])
@pytest.mark.parametrize("tool_choice", ["required", "auto"])
def test_a_call_cut_by_max_tokens_is_not_returned(client, max_tokens, tool_choice):
    whole, content, calls, finish = stream_and_whole(
        client, model=MODEL, messages=[{"role": "user", "content": "What's the weather in Paris?"}],
        tools=[WEATHER], tool_choice=tool_choice, temperature=0, max_tokens=max_tokens,
    )
    assert whole.finish_reason == finish == "length"
    assert whole.message.tool_calls is None and calls == []
    assert (whole.message.content or "") == content
    assert "<tool" not in content and '"name"' not in content, content
    if tool_choice == "required":
        assert whole.message.content is None
