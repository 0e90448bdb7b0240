"""The embedded engine on the real bundled model (SmolLM2-135M-Instruct), no mocks.

Each test keeps max_tokens small so the file runs in well under a minute on 2 cores.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable

import pytest

from mcp_server.engines.base import GenerationDelta, GenerationRequest, SamplingParams
from mcp_server.errors import EngineUnavailable, InvalidRequest

CAPITAL = "What is the capital of France? Answer in one sentence."
PROMPTS = [CAPITAL, "Write a haiku about the sea.", "List three colors.", "Why is the sky blue?"]


def request(content, *, max_tokens=16, temperature=0.0, seed=None, stop=(), **sampling) -> GenerationRequest:
    return GenerationRequest(
        model="HuggingFaceTB/SmolLM2-135M-Instruct",
        messages=[{"role": "user", "content": content}],
        max_tokens=max_tokens,
        stop=tuple(stop),
        sampling=SamplingParams(temperature=temperature, seed=seed, **sampling),
    )


async def collect(engine, req: GenerationRequest) -> list[GenerationDelta]:
    return [delta async for delta in engine.generate(req)]


def text(deltas: list[GenerationDelta]) -> str:
    return "".join(d.text for d in deltas)


def run(main: Callable[[], Awaitable]):
    return asyncio.run(main())


async def wait_until_idle(engine, timeout: float = 10.0) -> None:
    for _ in range(int(timeout / 0.02)):
        if engine.running == 0:
            return
        await asyncio.sleep(0.02)


@pytest.fixture(scope="module", params=["llamacpp", "torch"])
def deterministic_engine(request):
    """The bundled model on each runner in its batch-invariant mode: a sequence's output
    never depends on what it is batched with (on any CPU and dtype). The llama.cpp runner
    guarantees it by default (per-sequence KV caches); the torch runner with
    ``deterministic=True``."""
    from mcp_server.engines.embedded.engine import EmbeddedEngine

    deterministic = request.param == "torch"
    engine = EmbeddedEngine(max_batch_size=8, runner=request.param, deterministic=deterministic)
    run(engine.start)
    yield engine
    run(engine.aclose)


@pytest.fixture(scope="module")
def solo(deterministic_engine) -> dict[str, str]:
    """Greedy output of each prompt in PROMPTS, generated alone (24 tokens)."""

    async def main():
        return {p: text(await collect(deterministic_engine, request(p, max_tokens=24))) for p in PROMPTS}

    return run(main)


def test_model_card_names_the_default_model(engine):
    from mcp_server.engines.embedded.runners.llamacpp import (
        DEFAULT_CONTEXT_LENGTH,
        LlamaCppRunner,
    )

    card = engine.models[0]
    assert card.id == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert isinstance(engine.runner, LlamaCppRunner)  # the default for the bundled GGUF on CPU
    assert card.context_length == engine.context_length == DEFAULT_CONTEXT_LENGTH


def test_greedy_output_is_deterministic_and_finishes_with_stop(deterministic_engine, solo):
    deltas = run(lambda: collect(deterministic_engine, request(CAPITAL, max_tokens=24)))
    assert text(deltas) == solo[CAPITAL]
    assert "Paris" in solo[CAPITAL]
    assert deltas[-1].finish_reason == "stop"
    assert all(d.finish_reason is None for d in deltas[:-1])


def test_usage_counts_prompt_and_cumulative_completion_tokens(engine):
    deltas = run(lambda: collect(engine, request(CAPITAL, max_tokens=8)))
    messages = [{"role": "user", "content": CAPITAL}]
    prompt = engine.tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_dict=True)
    assert {d.prompt_tokens for d in deltas} == {len(prompt["input_ids"])}
    counts = [d.completion_tokens for d in deltas]
    assert counts == sorted(counts) and counts[-1] <= 8


def test_max_tokens_finishes_with_length(engine):
    deltas = run(lambda: collect(engine, request("Tell me a long story about a dragon.", max_tokens=5)))
    assert deltas[-1].finish_reason == "length"
    assert deltas[-1].completion_tokens == 5


def test_max_tokens_zero_generates_nothing(engine):
    deltas = run(lambda: collect(engine, request(CAPITAL, max_tokens=0)))
    assert [(d.text, d.completion_tokens, d.finish_reason) for d in deltas] == [("", 0, "length")]


def test_same_seed_gives_same_sample_alone_and_batched(deterministic_engine):
    engine = deterministic_engine
    seeded = request("Tell me a story.", max_tokens=16, temperature=1.0, seed=1234)

    async def main():
        alone = text(await collect(engine, seeded))
        others = [request(p, max_tokens=16, temperature=1.0) for p in PROMPTS[:2]]
        batched = await asyncio.gather(*(collect(engine, r) for r in [others[0], seeded, others[1]]))
        return alone, text(batched[1])

    alone, batched = run(main)
    assert alone == batched


def test_batched_greedy_equals_unbatched(deterministic_engine, solo):
    engine = deterministic_engine

    async def main():
        return await asyncio.gather(*(collect(engine, request(p, max_tokens=24)) for p in PROMPTS))

    batched = run(main)
    assert {p: text(d) for p, d in zip(PROMPTS, batched, strict=True)} == solo


def test_request_joining_mid_decode_completes_with_its_solo_output(deterministic_engine, solo):
    engine = deterministic_engine

    async def main():
        first = engine.generate(request(PROMPTS[1], max_tokens=24))
        head = [await anext(first) for _ in range(3)]
        assert engine.running == 1
        late = asyncio.create_task(collect(engine, request(PROMPTS[3], max_tokens=24)))
        rest = [d async for d in first]
        return text(head + rest), text(await late)

    first, late = run(main)
    assert first == solo[PROMPTS[1]]
    assert late == solo[PROMPTS[3]]
    assert engine.running == 0


def test_stop_string_and_its_prefixes_are_never_emitted(deterministic_engine, solo):
    engine = deterministic_engine
    stop = " is Paris"
    assert stop in solo[CAPITAL]  # the greedy output really contains it
    deltas = run(lambda: collect(engine, request(CAPITAL, max_tokens=24, stop=[stop, "never"])))
    # Deltas only add text, so an exact match also proves no prefix of the stop string
    # (" is", " is Par", ...) was ever sent.
    assert text(deltas) == solo[CAPITAL][: solo[CAPITAL].index(stop)]
    assert deltas[-1].finish_reason == "stop"


def test_prompt_longer_than_the_context_is_rejected(engine):
    long = "hello " * (engine.context_length + 10)

    async def main():
        with pytest.raises(InvalidRequest) as caught:
            await collect(engine, request(long, max_tokens=None))
        return caught.value

    error = run(main)
    assert error.param == "messages"
    assert f"context window is {engine.context_length} tokens" in error.message


def test_max_tokens_beyond_the_context_is_rejected_with_tokens_left(engine):
    async def main():
        with pytest.raises(InvalidRequest) as caught:
            await collect(engine, request(CAPITAL, max_tokens=engine.context_length))
        return caught.value

    error = run(main)
    messages = [{"role": "user", "content": CAPITAL}]
    prompt = engine.tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_dict=True)
    assert error.param == "max_tokens"
    assert f"only {engine.context_length - len(prompt['input_ids'])} tokens are left" in error.message


def test_closing_the_stream_frees_the_slot(engine):
    async def main():
        stream = engine.generate(request("Tell me a long story about a dragon.", max_tokens=200))
        await anext(stream)
        assert engine.running == 1
        await stream.aclose()
        await wait_until_idle(engine)

    run(main)
    assert engine.running == 0


def test_many_concurrent_requests_all_complete(engine):
    prompts = [f"Count from {i} to {i + 5}." for i in range(10)]  # more than max_batch_size=8

    async def main():
        return await asyncio.gather(*(collect(engine, request(p, max_tokens=6)) for p in prompts))

    results = run(main)
    assert all(d[-1].finish_reason in ("stop", "length") for d in results)
    assert engine.running == 0


def test_grammar_provider_constrains_output_to_json(engine, monkeypatch):
    monkeypatch.setattr(engine, "grammar_provider", lambda req, tok: engine.grammar_backend.compile_json_schema({}, "response_format"))
    prompt = "What is the capital of France? Reply in JSON."
    deltas = run(lambda: collect(engine, request(prompt, max_tokens=48)))
    assert deltas[-1].finish_reason == "stop"
    json.loads(text(deltas))


def test_grammar_provider_errors_reach_the_caller_before_any_delta(engine, monkeypatch):
    def refuse(req, tokenizer):
        raise InvalidRequest("bad schema", param="response_format")

    monkeypatch.setattr(engine, "grammar_provider", refuse)
    with pytest.raises(InvalidRequest, match="bad schema"):
        run(lambda: collect(engine, request(CAPITAL)))
    assert engine.running == 0


def test_model_failure_fails_the_request_and_the_engine_keeps_serving(engine, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("injected fault")

    monkeypatch.setattr(engine.runner, "prefill", broken)
    with pytest.raises(EngineUnavailable):
        run(lambda: collect(engine, request(CAPITAL, max_tokens=4)))
    monkeypatch.undo()
    deltas = run(lambda: collect(engine, request(CAPITAL, max_tokens=4)))
    assert deltas[-1].completion_tokens == 4
