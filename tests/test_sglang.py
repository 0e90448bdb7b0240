"""The SGLang engine without a GPU: launch command, request bodies, stream mapping, attach mode.

* The launch command of every catalog model is parsed by SGLang's own argument parser
  when ``sglang`` imports (``pip install --no-deps sglang`` plus a few small packages, see
  the Makefile), else checked against :data:`RECORDED_FLAGS`.
* Every body the forwarding layer builds validates against SGLang's
  ``ChatCompletionRequest`` when it imports.
* Attach mode runs end to end: the official ``openai`` client talks to a ``chatcap serve
  --engine sglang --sglang-url`` front, whose upstream is a second ``chatcap serve`` (the
  embedded engine), or :class:`FakeSGLang`, an in-process server that answers exactly as
  SGLang 0.5.23 does (flat errors, ``content: ""`` next to tool calls, reasoning deltas) and
  misbehaves on request (hangs, cuts the stream).
"""

from __future__ import annotations

import argparse
import base64
import functools
import json
import os
import signal
import sys
import time
from pathlib import Path

import anyio
import openai
import pytest

from mcp_server.catalog import load_catalog
from mcp_server.engines.sglang.engine import (
    SGLangEngine,
    read_deltas,
    sglang_body,
    upstream_error,
)
from mcp_server.engines.sglang.launcher import Launcher, launch_command
from mcp_server.engines.sglang.parsing import RawFormats
from mcp_server.errors import (
    EngineUnavailable,
    InvalidRequest,
    ModelNotFound,
    ServiceError,
)
from mcp_server.protocol.request import parse_request
from mcp_server.settings import Settings
from tests.live_server import free_port, start_server
from tests.stand_in import StandInHandler, StandInServer

MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
R1 = "deepseek-ai/DeepSeek-R1"
VISION = "Qwen/Qwen2-VL-7B-Instruct"
WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"], "additionalProperties": False}}}
PNG_URI = "data:image/png;base64," + base64.b64encode(
    b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00\x00\x1f\x15\xc4\x89"
).decode()

# SGLang 0.5.23 `python -m sglang.launch_server --help`: the flags and choices we use.
RECORDED_FLAGS = {
    "version": "0.5.23",
    "value_flags": {
        "--model-path", "--served-model-name", "--host", "--port", "--context-length",
        "--grammar-backend", "--tool-call-parser", "--reasoning-parser", "--tp-size",
        "--dp-size", "--mem-fraction-static", "--chunked-prefill-size",
    },
    "switches": {"--trust-remote-code", "--enable-metrics", "--enable-cache-report"},
    "choices": {
        "--grammar-backend": {"xgrammar", "outlines", "llguidance", "none"},
        "--tool-call-parser": {"llama3", "qwen25", "qwen", "deepseekv3", "hermes", "mistral", "pythonic"},
        "--reasoning-parser": {"deepseek-r1", "deepseek-v3", "qwen3"},
    },
}


@functools.cache
def sglang_parser() -> argparse.ArgumentParser | None:
    """SGLang's own server-argument parser, or None when sglang does not import here."""
    try:
        from sglang.srt.server_args import ServerArgs
    except Exception:  # not installed, or a missing optional dependency
        return None
    parser = argparse.ArgumentParser(exit_on_error=False)
    ServerArgs.add_cli_args(parser)
    return parser


@functools.cache
def sglang_request_model():
    try:
        from sglang.srt.entrypoints.openai.protocol import ChatCompletionRequest
    except Exception:
        return None
    return ChatCompletionRequest


def check_with_recorded_flags(args: list[str]) -> None:
    i = 0
    while i < len(args):
        flag = args[i]
        if flag in RECORDED_FLAGS["switches"]:
            i += 1
            continue
        assert flag in RECORDED_FLAGS["value_flags"], f"{flag} unknown to SGLang {RECORDED_FLAGS['version']}"
        value = args[i + 1]
        assert value in RECORDED_FLAGS["choices"].get(flag, {value}), f"{flag} {value}"
        i += 2


# ---------------------------------------------------------------- launch command


@pytest.mark.parametrize("parsers", ["chatcap", "sglang"])
@pytest.mark.parametrize("entry", load_catalog(), ids=lambda e: e.id)
def test_launch_command_of_every_catalog_model_parses(entry, parsers):
    settings = Settings(engine="sglang", model_path=entry.model_path, sglang_args=("--mem-fraction-static", "0.8"),
                        sglang_parsers=parsers)
    command = launch_command(settings, port=30123, python="python3")
    assert command[:3] == ["python3", "-m", "sglang.launch_server"]
    args = command[3:]
    parser = sglang_parser()
    if parser is None:
        check_with_recorded_flags(args)
        return
    parsed = parser.parse_args(args)
    assert (parsed.model_path, parsed.served_model_name, parsed.port) == (entry.model_path, entry.id, 30123)
    assert parsed.grammar_backend == "xgrammar"
    # chatcap parses the raw text: SGLang must not run a tool-call parser (it would parse first)
    assert parsed.tool_call_parser == (entry.tool_call_parser if parsers == "sglang" else None)
    assert parsed.reasoning_parser == entry.reasoning_parser
    assert parsed.context_length == entry.context_length
    assert parsed.mem_fraction_static == 0.8


def test_recorded_flag_list_matches_sglang_when_it_imports():
    parser = sglang_parser()
    if parser is None:
        pytest.skip("sglang does not import here: the recorded flag list is what the launch test uses")
    options = {o: a for a in parser._actions for o in a.option_strings}
    for flag in RECORDED_FLAGS["value_flags"] | RECORDED_FLAGS["switches"]:
        assert flag in options, flag
    for flag, choices in RECORDED_FLAGS["choices"].items():
        assert choices <= set(options[flag].choices), flag


def test_pass_through_flags_come_last_so_they_win():
    command = launch_command(Settings(model_path="deepseek-ai/DeepSeek-R1", sglang_args=("--tp-size", "16")), 1)
    assert command[-2:] == ["--tp-size", "16"] and command.count("--tp-size") == 2
    unknown = launch_command(Settings(model_path="/models/my-finetune", context_length=4096), 1)
    assert "--tool-call-parser" not in unknown and unknown[unknown.index("--context-length") + 1] == "4096"


def test_launch_mode_without_sglang_fails_at_once_saying_what_to_install(monkeypatch):
    import mcp_server.engines.sglang.launcher as launcher_module

    monkeypatch.setattr(launcher_module.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(EngineUnavailable, match=r"pip install 'chatcap\[sglang\]'"):
        SGLangEngine.from_settings(Settings(engine="sglang"))
    assert SGLangEngine.from_settings(Settings(engine="sglang", sglang_url="http://127.0.0.1:9")).launcher is None


# ---------------------------------------------------------------- the managed child process

FAKE_SERVER = r'''
import http.server, sys, time
print("loading weights", flush=True)
if sys.argv[1] == "crash":
    print("CUDA error: out of memory", flush=True); sys.exit(3)
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.end_headers()
    def log_message(self, *a): pass
print("server ready", flush=True)
http.server.HTTPServer(("127.0.0.1", int(sys.argv[2])), H).serve_forever()
'''


def test_launcher_waits_for_health_restarts_a_dead_child_and_stops_it(tmp_path: Path):
    script = tmp_path / "fake_sglang.py"
    script.write_text(FAKE_SERVER)
    port = free_port()

    async def scenario():
        launcher = Launcher([sys.executable, str(script), "ok", str(port)], f"http://127.0.0.1:{port}", backoff=0.1)
        await launcher.start()
        try:
            assert launcher.status == "running" and "server ready" in launcher.last_log()
            first = launcher.pid
            os.kill(first, signal.SIGKILL)
            with anyio.fail_after(20):
                while launcher.status != "running" or launcher.pid in (None, first):
                    await anyio.sleep(0.1)
        finally:
            second = launcher.pid
            await launcher.aclose()
        assert second is not None and launcher.pid is None and launcher.status == "stopped"
        with pytest.raises(ProcessLookupError):  # stopped and reaped
            os.kill(second, 0)

    anyio.run(scenario)


def test_launcher_error_quotes_the_last_log_lines_of_a_child_that_died(tmp_path: Path):
    script = tmp_path / "fake_sglang.py"
    script.write_text(FAKE_SERVER)
    launcher = Launcher([sys.executable, str(script), "crash", "1"], "http://127.0.0.1:1")
    with pytest.raises(EngineUnavailable, match=r"exited with status 3(.|\n)*CUDA error: out of memory"):
        anyio.run(launcher.start)


# ---------------------------------------------------------------- request bodies

CLIENT_BODIES = [
    {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}]},
    {"model": MODEL, "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
     "max_tokens": 16, "temperature": 0, "top_p": 0.9, "top_k": 20, "seed": 3, "stop": ["\n", "END"],
     "presence_penalty": 0.5, "frequency_penalty": 0.1, "stream": True},
    {"model": MODEL, "messages": [{"role": "user", "content": "Weather in Oslo?"}],
     "tools": [WEATHER_TOOL], "tool_choice": "required", "parallel_tool_calls": False},
    {"model": MODEL, "messages": [{"role": "user", "content": "Weather in Oslo?"}],
     "tools": [WEATHER_TOOL], "tool_choice": {"type": "function", "function": {"name": "get_weather"}}},
    {"model": MODEL, "messages": [
        {"role": "user", "content": "Weather in Oslo?"},
        {"role": "assistant", "content": None, "tool_calls": [{"id": "call_1", "type": "function",
         "function": {"name": "get_weather", "arguments": "{\"city\": \"Oslo\"}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "{\"temp_c\": 4}"}], "tools": [WEATHER_TOOL]},
    {"model": MODEL, "messages": [{"role": "user", "content": "A person as JSON."}],
     "response_format": {"type": "json_schema", "json_schema": {"name": "person", "strict": True, "schema": {
         "type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}}}},
    {"model": MODEL, "messages": [{"role": "user", "content": "JSON please"}], "response_format": {"type": "json_object"}},
    {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "logprobs": True, "top_logprobs": 2},
    {"model": VISION, "messages": [{"role": "user", "content": [
        {"type": "text", "text": "Describe."}, {"type": "image_url", "image_url": {"url": PNG_URI, "detail": "low"}}]}]},
]


@pytest.mark.parametrize("raw", [None, RawFormats("hermes", "qwen3")], ids=["sglang", "chatcap"])
@pytest.mark.parametrize("body", CLIENT_BODIES, ids=range(len(CLIENT_BODIES)))
def test_forwarded_bodies_validate_against_sglangs_request_model(body, raw):
    forwarded = sglang_body(parse_request(body).generation, raw)
    assert forwarded["stream"] is True and forwarded["n"] == 1
    assert all(tool["function"]["strict"] is True for tool in forwarded.get("tools", ()))
    model = sglang_request_model()
    if model is None:
        pytest.skip("sglang's protocol module does not import here")
    request = model.model_validate(forwarded)
    assert request.stream and request.stream_options.continuous_usage_stats


# ---------------------------------------------------------------- error and stream mapping


def test_sglang_flat_error_bodies_become_our_errors_with_their_status():
    flat = {"object": "error", "message": "max_tokens is too large", "type": "BadRequestError", "param": None, "code": 400}
    error = upstream_error(400, flat)
    assert isinstance(error, InvalidRequest) and error.to_dict()["error"]["message"] == "max_tokens is too large"
    assert error.to_dict()["error"]["code"] is None  # SGLang's integer code is the status, not a code
    assert isinstance(upstream_error(404, {"object": "error", "message": "no such model", "code": 404}), ModelNotFound)
    too_big = upstream_error(413, {"detail": "Request Entity Too Large"})
    assert too_big.status_code == 413 and "Too Large" in too_big.message
    assert upstream_error(503, "upstream connect error").status_code == 503
    failed = upstream_error(500, {"object": "error", "message": "CUDA error", "type": "InternalServerError", "code": 500})
    assert type(failed) is ServiceError and failed.status_code == 500 and "CUDA error" in failed.message


def sse(*events) -> list[str]:
    return [f"data: {e if isinstance(e, str) else json.dumps(e)}" for e in events] + [""]


def chunk(delta=None, finish=None, usage=None, choices=True) -> dict:
    body = {"id": "x", "object": "chat.completion.chunk", "created": 0, "model": MODEL,
            "choices": [{"index": 0, "delta": delta or {}, "finish_reason": finish}] if choices else []}
    return {**body, "usage": usage}


def deltas(lines: list[str]) -> list:
    async def collect():
        async def source():
            for line in lines:
                yield line
        return [d async for d in read_deltas(source())]

    return anyio.run(collect)


def test_stream_with_tool_calls_drops_empty_content_and_fixes_finish():
    lines = sse(
        chunk({"role": "assistant", "content": ""}),
        chunk({"content": "", "tool_calls": [{"index": 0, "id": "call_a", "type": "function",
                                              "function": {"name": "get_weather", "arguments": ""}}]}),
        chunk({"content": "", "tool_calls": [{"index": 0, "id": "call_a", "function": {"arguments": "{\"city\": "}}]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": "\"Oslo\"}"}}]}),
        chunk(finish="stop", usage={"prompt_tokens": 30, "completion_tokens": 9, "total_tokens": 39}),
        chunk(choices=False, usage={"prompt_tokens": 30, "completion_tokens": 9, "total_tokens": 39,
                                    "prompt_tokens_details": {"cached_tokens": 24}}),
        "[DONE]",
    )
    out = deltas(lines)
    assert all(d.text == "" for d in out)
    calls = [c for d in out for c in d.tool_calls]
    assert (calls[0].id, calls[0].name) == ("call_a", "get_weather")
    assert all(c.id is None and c.name is None for c in calls[1:])
    assert "".join(c.arguments for c in calls) == "{\"city\": \"Oslo\"}"
    assert (out[-1].finish_reason, out[-1].prompt_tokens, out[-1].completion_tokens) == ("tool_calls", 30, 9)
    assert out[-1].cached_tokens == 24  # SGLang's --enable-cache-report count, passed on


def test_reasoning_deltas_pass_through_apart_from_content():
    out = deltas(sse(chunk({"reasoning_content": "17*3 = 51."}), chunk({"content": "51"}),
                     chunk(finish="stop"), "[DONE]"))
    assert [(d.reasoning_content, d.text) for d in out[:2]] == [("17*3 = 51.", ""), ("", "51")]
    assert out[-1].finish_reason == "stop"


def test_logprobs_come_back_even_on_chunks_without_text():
    entry = {"token": "\u00e9", "logprob": -0.25, "bytes": [195, 169],
             "top_logprobs": [{"token": "\u00e9", "logprob": -0.25, "bytes": [195, 169]}, {"token": "e", "logprob": -2.0}]}
    held = {"index": 0, "delta": {}, "logprobs": {"content": [entry]}, "finish_reason": None}
    out = deltas(sse({**chunk(), "choices": [held]}, chunk(finish="stop"), "[DONE]"))
    (token,) = out[0].logprobs
    assert (out[0].text, token.token, token.logprob, token.bytes) == ("", "\u00e9", -0.25, b"\xc3\xa9")
    assert [(t.token, t.bytes) for t in token.top_logprobs] == [("\u00e9", b"\xc3\xa9"), ("e", b"e")]


@pytest.mark.parametrize(
    ("lines", "error", "message"),
    [
        (sse(chunk({"content": "Hel"})), EngineUnavailable, "stopped in the middle"),
        (sse(chunk({"content": "Hel"}), chunk(finish="abort"), "[DONE]"), EngineUnavailable, "abort"),
        (sse({"error": {"object": "error", "message": "bad schema", "type": "BadRequestError", "code": 400}}),
         InvalidRequest, "bad schema"),
    ],
    ids=["cut", "abort", "error-event"],
)
def test_broken_streams_raise_clear_errors(lines, error, message):
    with pytest.raises(error, match=message):
        deltas(lines)


# ---------------------------------------------------------------- attach mode, end to end


class FakeSGLang:
    """An in-process HTTP server answering like SGLang 0.5.23; it records every body it gets.

    The last user message picks the behaviour: ``hang`` (never answers), ``cut`` (closes
    the stream mid-answer), ``flat-error`` (SGLang's flat 400 body), ``tool`` (a streamed
    tool call with ``content: ""``); otherwise an R1-style answer with reasoning deltas.
    """

    MODELS = [MODEL, R1, VISION]

    def __init__(self):
        self.bodies: list[dict] = []
        fake = self

        class Handler(StandInHandler):
            def do_GET(self):
                data = [{"id": m, "object": "model", "owned_by": "sglang", "root": m, "max_model_len": 4096}
                        for m in fake.MODELS]
                self.send_json(200, {"object": "list", "data": data})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                fake.bodies.append(body)
                content = body["messages"][-1]["content"]
                prompt = content if isinstance(content, str) else "image"
                if prompt == "hang":
                    time.sleep(8)
                    return
                if prompt == "flat-error":
                    self.send_json(400, {"object": "error", "message": "Requested token count exceeds the "
                                     "model's maximum context length", "type": "BadRequestError",
                                     "param": None, "code": 400})
                    return
                self.start_events()
                usage = {"prompt_tokens": 12, "completion_tokens": 0, "total_tokens": 12}
                events = [chunk({"role": "assistant", "content": ""})]
                if prompt == "tool":
                    events += [chunk({"content": "", "tool_calls": [{"index": 0, "id": "call_x", "type": "function",
                                      "function": {"name": "get_weather", "arguments": "{\"city\": "}}]}),
                               chunk({"content": "", "tool_calls": [{"index": 0, "function": {"arguments": "\"Oslo\"}"}}]}),
                               chunk(finish="tool_calls")]
                elif prompt == "cut":
                    events += [chunk({"content": "The answer"})]
                else:
                    events += [chunk({"reasoning_content": "The user greets me."}), chunk({"content": "Hello!"}),
                               chunk(finish="stop")]
                for event in events:
                    usage = {**usage, "completion_tokens": usage["completion_tokens"] + 1}
                    self.send_chunk(f"data: {json.dumps({**event, 'usage': usage})}\n\n")
                if prompt == "cut":
                    self.wfile.write(b"40\r\ndata: {\"trunc")  # half a chunk, then the connection drops
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.send_chunk(f"data: {json.dumps(chunk(choices=False, usage=usage))}\n\n")
                self.send_chunk("data: [DONE]\n\n")
                self.send_chunk("")

        self._server = StandInServer(Handler)
        self.url = self._server.url

    def close(self):
        self._server.close()


@pytest.fixture(scope="module")
def fake_sglang():
    fake = FakeSGLang()
    yield fake
    fake.close()


@pytest.fixture(scope="module")
def log_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("sglang-logs")


@pytest.fixture(scope="module")
def fake_front(fake_sglang, log_dir):
    """``chatcap serve --engine sglang`` attached to :class:`FakeSGLang`, 2 s timeout."""
    server = start_server(log_dir, "--engine", "sglang", "--sglang-url", fake_sglang.url, "--sglang-timeout", "2")
    yield openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="none", max_retries=0, timeout=30)
    server.stop()


@pytest.fixture(scope="module")
def upstream(log_dir):
    """A second ``chatcap serve`` (the embedded engine) standing in for an SGLang server."""
    server = start_server(log_dir)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def front(upstream, log_dir):
    # Generous timeouts: the embedded model shares two CPU cores with everything else.
    server = start_server(log_dir, "--engine", "sglang", "--sglang-url", upstream.base_url, "--sglang-timeout", "120")
    yield openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="none", max_retries=0, timeout=300)
    server.stop()


def test_attach_lists_the_upstream_models_with_catalog_facts(fake_front, fake_sglang):
    assert [m.id for m in fake_front.models.list().data] == FakeSGLang.MODELS


def test_attach_maps_reasoning_tool_calls_and_flat_errors(fake_front, fake_sglang):
    answer = fake_front.chat.completions.create(model=R1, messages=[{"role": "user", "content": "Hi"}])
    message = answer.choices[0].message
    assert (message.content, message.model_extra["reasoning_content"]) == ("Hello!", "The user greets me.")
    assert answer.usage.completion_tokens == 4
    call = fake_front.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "tool"}], tools=[WEATHER_TOOL], tool_choice="required")
    choice = call.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    assert json.loads(choice.message.tool_calls[0].function.arguments) == {"city": "Oslo"}
    with pytest.raises(openai.BadRequestError, match="maximum context length") as caught:
        fake_front.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "flat-error"}])
    assert caught.value.body["type"] == "invalid_request_error"


def test_bodies_sent_upstream_validate_against_sglangs_request_model(fake_front, fake_sglang):
    model = sglang_request_model()
    if model is None:
        pytest.skip("sglang's protocol module does not import here")
    sent = len(fake_sglang.bodies)
    fake_front.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "tool"}], tools=[WEATHER_TOOL], tool_choice="required")
    assert len(fake_sglang.bodies) > sent
    for body in fake_sglang.bodies:
        model.model_validate(body)


def test_attach_checks_images_against_the_served_models_catalog_entry(fake_front, fake_sglang):
    image = [{"role": "user", "content": [{"type": "text", "text": "Describe."},
                                          {"type": "image_url", "image_url": {"url": PNG_URI}}]}]
    assert fake_front.chat.completions.create(model=VISION, messages=image).choices[0].message.content == "Hello!"
    with pytest.raises(openai.BadRequestError, match="does not accept image input") as caught:
        fake_front.chat.completions.create(model=MODEL, messages=image)
    assert caught.value.body["param"] == "messages[0].content[1]"
    image[0]["content"][1]["image_url"]["url"] = "data:image/png;base64,%%%"
    with pytest.raises(openai.BadRequestError, match="not valid base64"):
        fake_front.chat.completions.create(model=VISION, messages=image)


def test_upstream_that_never_answers_is_503_within_the_timeout(fake_front):
    # The client's own timeout (30 s) would raise APITimeoutError instead: the 503 proves the
    # server gave up first, after its --sglang-timeout of 2 s.
    with pytest.raises(openai.InternalServerError, match="did not answer within 2 s") as caught:
        fake_front.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hang"}])
    assert caught.value.status_code == 503


def test_upstream_cut_mid_stream_ends_the_stream_with_an_error_event(fake_front):
    stream = fake_front.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "cut"}], stream=True)
    received = []
    with pytest.raises(openai.APIError, match="SGLang .* broke off the answer"):
        for event in stream:
            received.append(event.choices[0].delta.content if event.choices else None)
    assert "The answer" in received


def test_engine_reports_an_unreachable_upstream_at_start():
    engine = SGLangEngine(f"http://127.0.0.1:{free_port()}", timeout=2)
    with pytest.raises(EngineUnavailable, match="Cannot reach SGLang"):
        anyio.run(engine.start)
    anyio.run(engine.aclose)


def test_attach_to_a_chatcap_upstream_completes_and_streams(front):
    prompt = [{"role": "user", "content": "Name three colors."}]
    whole = front.chat.completions.create(model=MODEL, messages=prompt, max_tokens=8, temperature=0)
    assert whole.choices[0].message.content and whole.usage.completion_tokens <= 8
    events = list(front.chat.completions.create(
        model=MODEL, messages=prompt, max_tokens=8, temperature=0, stream=True, stream_options={"include_usage": True}))
    assert "".join(e.choices[0].delta.content or "" for e in events if e.choices) == whole.choices[0].message.content
    assert events[-1].usage.completion_tokens == whole.usage.completion_tokens


def test_attach_forwards_logprobs_and_maps_them_back(front, upstream):
    kwargs = {"model": MODEL, "messages": [{"role": "user", "content": "Name three colors."}], "max_tokens": 6,
              "temperature": 0, "logprobs": True, "top_logprobs": 2}
    through = front.chat.completions.create(**kwargs)
    direct = openai.OpenAI(base_url=f"{upstream.base_url}/v1", api_key="none").chat.completions.create(**kwargs)
    assert len(through.choices[0].logprobs.content) == through.usage.completion_tokens
    assert through.choices[0].logprobs.model_dump() == direct.choices[0].logprobs.model_dump()


def test_attach_to_a_chatcap_upstream_passes_tool_calls_through(front):
    called = front.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "What is the weather in Oslo?"}],
        tools=[WEATHER_TOOL], tool_choice="required", max_tokens=96, temperature=0)
    assert called.choices[0].finish_reason == "tool_calls"
    assert "city" in json.loads(called.choices[0].message.tool_calls[0].function.arguments)


def test_attach_to_a_chatcap_upstream_maps_its_errors(front):
    with pytest.raises(openai.NotFoundError) as caught:
        front.chat.completions.create(model="no/such-model", messages=[{"role": "user", "content": "Hi"}])
    assert caught.value.body["code"] == "model_not_found"
    with pytest.raises(openai.BadRequestError) as caught:
        front.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Hi"}], max_tokens=0)
    assert caught.value.body["param"] == "max_tokens"
    too_long = [{"role": "user", "content": "word " * 9000}]
    with pytest.raises(openai.BadRequestError):  # rejected upstream, mapped back to 400
        front.chat.completions.create(model=MODEL, messages=too_long, max_tokens=4)


def test_upstream_stopped_mid_stream_is_reported_not_hung(front, upstream):
    stream = front.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Write a long story about a dragon."}],
        max_tokens=400, temperature=0, stream=True)
    # A hang would end in the client's timeout (APITimeoutError, not an SGLang error).
    with pytest.raises(openai.APIError, match="SGLang"):
        for index, _ in enumerate(stream):
            if index == 3:
                upstream.process.kill()
