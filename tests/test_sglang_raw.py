"""chatcap's parsers over SGLang's raw output (``--sglang-parsers chatcap``), against a recorded stand-in.

:class:`RecordedSGLang` answers like SGLang 0.5.23 launched without ``--tool-call-parser`` and
with ``--reasoning-parser qwen3`` (its ``GET /server_info`` says so), asked for
``separate_reasoning: false``: it streams a recorded model output unparsed, as ``content``
deltas of 1-8 characters. The outputs are canitoolcall 0.1.1 fixtures of Qwen3 (Hermes calls,
``<think>`` reasoning); the last user message names the fixture. It serves Qwen3 (the model
writes ``<think>``) and Qwen3-Thinking-2507 (the template opens it), and renders their
generation prompts for ``/v1/tokenize`` + ``/v1/detokenize`` (one token per character). The
official ``openai`` client asks a ``chatcap serve --engine sglang --sglang-url`` front,
streamed and not, and canitoolcall's own checks judge the answers. The stand-in records the
bodies chatcap sends.
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

import anyio
import openai
import pytest
from canitoolcall.checks import run_checks
from canitoolcall.fixtures import load_fixtures
from canitoolcall.results import Observation, ParsedToolCall, ParseResult, StreamAccumulator

from mcp_server.engines.base import GenerationDelta, GenerationRequest
from mcp_server.engines.sglang.engine import sglang_body
from mcp_server.engines.sglang.parsing import RawFormats
from mcp_server.errors import InvalidRequest
from tests.live_server import start_server
from tests.stand_in import StandInHandler, StandInServer

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

from toolcall_corpus import _family  # noqa: E402

MODEL, THINKING = "Qwen/Qwen3-8B", "Qwen/Qwen3-4B-Thinking-2507"
GENERATION_PROMPTS = {  # what each model's chat template renders for one user message
    MODEL: "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n",
    THINKING: "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n<think>\n",
}
FIXTURES = {f.id: f for f in load_fixtures() if f.family == "qwen3-hermes"}
CASES = {
    "qwen3-hermes/single-call-thinking": MODEL,  # reasoning, then one call
    "qwen3-hermes/parallel-two-calls-thinking": MODEL,  # reasoning, then two calls
    "qwen3-hermes/text-before-call-no-thinking": MODEL,  # content, then a call
    "qwen3-hermes/vllm-text-then-call-no-separator": MODEL,
    "qwen3-hermes/thinking2507-single-call": THINKING,  # the output starts inside the think block
    "qwen3-hermes/thinking2507-text-before-call": THINKING,
}


class RecordedSGLang:
    """An HTTP server shaped like SGLang 0.5.23 without a tool-call parser; records every body."""

    def __init__(self, server_info: dict):
        self.bodies: list[dict] = []
        stand_in = self

        class Handler(StandInHandler):
            def do_GET(self):
                if self.path == "/server_info":
                    self.send_json(200, server_info)
                else:
                    self.send_json(200, {"object": "list", "data": [
                        {"id": m, "object": "model", "owned_by": "sglang", "root": m, "max_model_len": 32768}
                        for m in GENERATION_PROMPTS]})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if self.path == "/v1/tokenize":  # SGLang renders the chat template, then tokenizes
                    tokens = [ord(c) for c in GENERATION_PROMPTS[body["model"]]]
                    self.send_json(200, {"tokens": tokens, "count": len(tokens), "max_model_len": 32768})
                    return
                if self.path == "/v1/detokenize":
                    self.send_json(200, {"text": "".join(map(chr, body["tokens"]))})
                    return
                stand_in.bodies.append(body)
                text = FIXTURES[body["messages"][-1]["content"]].raw_output
                rng, pieces, pos = random.Random(len(stand_in.bodies)), [], 0
                while pos < len(text):  # token-sized pieces of 1-8 characters
                    size = rng.randint(1, 8)
                    pieces.append(text[pos : pos + size])
                    pos += size
                self.start_events()
                events = [{"role": "assistant", "content": ""}, *({"content": piece} for piece in pieces)]
                for count, delta in enumerate(events):
                    self._event([{"index": 0, "delta": delta, "finish_reason": None}], count)
                self._event([{"index": 0, "delta": {}, "finish_reason": "stop", "matched_stop": 151645}], len(pieces))
                self._event([], len(pieces))
                self.send_chunk("data: [DONE]\n\n")
                self.send_chunk("")

            def _event(self, choices: list, completion_tokens: int):
                usage = {"prompt_tokens": 30, "completion_tokens": completion_tokens,
                         "total_tokens": 30 + completion_tokens}
                event = {"id": "x", "object": "chat.completion.chunk", "model": MODEL, "choices": choices, "usage": usage}
                self.send_chunk(f"data: {json.dumps(event)}\n\n")

        self._server = StandInServer(Handler)
        self.url = self._server.url

    def close(self):
        self._server.close()


@pytest.fixture(scope="module")
def log_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("sglang-raw-logs")


@pytest.fixture(scope="module")
def stand_in():
    server = RecordedSGLang({"tool_call_parser": None, "reasoning_parser": "qwen3", "version": "0.5.23"})
    yield server
    server.close()


@pytest.fixture(scope="module")
def front(stand_in, log_dir):
    """``chatcap serve --engine sglang`` over the stand-in; Qwen3 is not in the catalog, so the
    tool-call format comes from the flag and the reasoning format from the server's flags."""
    server = start_server(log_dir, "--engine", "sglang", "--sglang-url", stand_in.url, "--tool-call-parser", "hermes")
    yield openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="none", max_retries=0, timeout=60)
    server.stop()


def _ask(client: openai.OpenAI, fixture, stream: bool, model: str = MODEL, **extra) -> ParseResult:
    request = {"model": model, "messages": [{"role": "user", "content": fixture.id}], "tools": list(fixture.tools), **extra}
    if not stream:
        message = client.chat.completions.create(**request).choices[0].message
        calls = tuple(ParsedToolCall(c.function.name, c.function.arguments) for c in message.tool_calls or ())
        return ParseResult(message.content, getattr(message, "reasoning_content", None), calls)
    accumulator = StreamAccumulator()
    for chunk in client.chat.completions.create(**request, stream=True):
        for choice in chunk.choices:
            accumulator.add_openai_delta(choice.delta.model_dump(exclude_none=True))
    return accumulator.result()


@pytest.mark.parametrize("case", CASES)
def test_raw_output_parsed_by_chatcap_passes_canitoolcalls_checks(front, stand_in, case):
    fixture, model = FIXTURES[case], CASES[case]
    observation = Observation(nonstream=_ask(front, fixture, stream=False, model=model),
                              streams={"sse": _ask(front, fixture, stream=True, model=model)})
    failed = [f"{r.check}[{r.strategy}]: {r.detail}" for r in run_checks(fixture, _family(fixture), observation)
              if r.status.value == "fail"]
    assert not failed, failed
    assert observation.nonstream.tool_calls, observation  # the cases all call tools


def test_chatcap_asks_sglang_for_the_raw_text_under_the_hermes_structural_tag(front, stand_in):
    fixture = FIXTURES["qwen3-hermes/single-call-thinking"]
    _ask(front, fixture, stream=False, tool_choice="required")
    body = stand_in.bodies[-1]
    assert body["separate_reasoning"] is False and body["skip_special_tokens"] is False
    # SGLang renders the tools into its chat template only when tool_choice is not "none"; "required"
    # is the structural tag's job, so SGLang gets "auto" (its own JSON constraint would clash).
    assert [t["function"]["name"] for t in body["tools"]] == [t["function"]["name"] for t in fixture.tools]
    assert body["tool_choice"] == "auto"
    tag = body["response_format"]
    assert tag["type"] == "structural_tag" and tag["format"]["type"] == "tags_with_separator"
    assert tag["format"]["at_least_one"] is True
    for sent, tool in zip(tag["format"]["tags"], fixture.tools, strict=True):
        name = tool["function"]["name"]
        assert sent["begin"] == f'<tool_call>\n{{"name": "{name}", "arguments": '
        assert sent["end"] == "}\n</tool_call>"
        assert sent["content"] == {"type": "json_schema", "json_schema": tool["function"]["parameters"]}
    _ask(front, fixture, stream=True)
    auto = stand_in.bodies[-1]["response_format"]["format"]
    assert auto["type"] == "triggered_tags" and auto["triggers"] == ["<tool_call>"]
    try:
        from sglang.srt.entrypoints.openai.protocol import ChatCompletionRequest
    except ImportError:
        return
    sampling = ChatCompletionRequest.model_validate(body).to_sampling_params(stop=[], model_generation_config={})
    assert json.loads(sampling["structural_tag"])["format"]["type"] == "tags_with_separator"


def test_a_server_running_a_tool_call_parser_keeps_sglangs_parsers(log_dir):
    stand_in = RecordedSGLang({"tool_call_parser": "qwen25", "reasoning_parser": "qwen3"})
    server = start_server(log_dir, "--engine", "sglang", "--sglang-url", stand_in.url)
    try:
        client = openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="none", max_retries=0, timeout=60)
        fixture = FIXTURES["qwen3-hermes/text-before-call-no-thinking"]
        answer = _ask(client, fixture, stream=False)
        body = stand_in.bodies[-1]
        assert "separate_reasoning" not in body and "response_format" not in body
        assert answer.content == fixture.raw_output  # this stand-in does not parse: the text passes through
        assert "its own parsers answer" in server.log_path.read_text()
    finally:
        server.stop()
        stand_in.close()


def test_template_opened_reasoning_and_repeated_calls():
    """DeepSeek-R1's template opens the think block (the output starts inside it), as its rendered
    prompt says; a call that repeats an earlier one ends the answer there, as in the embedded engine."""
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    request = GenerationRequest(model="m", messages=[], tools=tools, tool_choice="auto")
    call = "<｜tool▁call▁begin｜>function<｜tool▁sep｜>f\n```json\n{}\n```<｜tool▁call▁end｜>\n"
    text = "Plan.</think><｜tool▁calls▁begin｜>" + call + call + "<｜tool▁calls▁end｜>"

    async def run():
        async def deltas():
            for index, piece in enumerate(text[i : i + 5] for i in range(0, len(text), 5)):
                yield GenerationDelta(piece, 1, index + 1, None)
            yield GenerationDelta("", 1, 99, "stop")

        formats = RawFormats("deepseekv3", "deepseek-r1", "<｜User｜>Hi<｜Assistant｜><think>\n")
        return [d async for d in formats.parse(request, deltas())]

    out = anyio.run(run)
    assert "".join(d.reasoning_content for d in out) == "Plan."
    assert "".join(d.text for d in out) == ""
    assert [c.name for d in out for c in d.tool_calls] == ["f"]
    assert out[-1].finish_reason == "tool_calls" and out[-1].completion_tokens < 99  # ended at the repeat


WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
PERSON = {"type": "json_schema", "json_schema": {"name": "p", "schema": {"type": "object"}}}


def _body(formats: RawFormats, tool_choice, **fields) -> dict:
    return sglang_body(GenerationRequest(model="m", messages=[], tools=[WEATHER], tool_choice=tool_choice, **fields), formats)


def test_raw_request_fields_per_tool_choice_and_format():
    # The tool grammar replaces the client's response_format while calls are allowed (as on the embedded engine).
    assert _body(RawFormats("llama3", None), "auto", response_format=PERSON)["response_format"]["format"]["triggers"] == [
        '{"name": ']
    # tool_choice none: no calls to parse or constrain; SGLang drops the tools from the template itself.
    plain = _body(RawFormats("hermes", None), "none", response_format=PERSON)
    assert plain["tool_choice"] == "none" and plain["response_format"] == PERSON
    assert "skip_special_tokens" not in plain and plain["separate_reasoning"] is False
    # A format whose arguments are not JSON (Qwen XML): auto runs free and is parsed; required is refused
    # (SGLang's grammar backend compiles structural tags with JSON arguments only).
    coder = _body(RawFormats("qwen3_coder", "qwen3"), "auto")
    assert "response_format" not in coder and coder["tool_choice"] == "auto" and coder["skip_special_tokens"] is False
    with pytest.raises(InvalidRequest) as refused:
        _body(RawFormats("qwen3_coder", "qwen3"), "required")
    assert refused.value.param == "tool_choice"
    with pytest.raises(InvalidRequest) as unknown:  # nothing names the model's format
        _body(RawFormats(None, None), "auto")
    assert unknown.value.param == "tools"
