"""Jump-forward: grammar-forced tokens fed as drafts, several tokens of a row per step.

On the real bundled model and llama.cpp runner. The claims: a ``json_schema`` answer with
many fixed keys takes fewer decode steps (counted by the scheduler, never timed), its text
and log-probabilities are exactly those of one-token steps (greedy and seeded sampling),
the forced tokens of a step go out as one delta, and streamed equals non-streamed over HTTP.
"""

from __future__ import annotations

import asyncio
import json

import jsonschema
import pytest

from mcp_server.engines.base import GenerationRequest, SamplingParams

MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
KEYS = ["name", "age", "city", "country_code", "occupation", "favorite_color", "home_planet"]
SCHEMA = {
    "type": "object",
    "properties": {key: {"type": "integer" if key == "age" else "string"} for key in KEYS},
    "required": KEYS,
}
PROMPTS = ["Describe a person as JSON.", "Invent a character from Japan."]


def request(content: str, temperature: float = 0.0, seed: int | None = None) -> GenerationRequest:
    return GenerationRequest(
        model=MODEL,
        messages=[{"role": "user", "content": content}],
        max_tokens=160,
        sampling=SamplingParams(temperature=temperature, seed=seed),
        response_format={"type": "json_schema", "json_schema": {"name": "person", "schema": SCHEMA}},
        logprobs=True,
        top_logprobs=2,
    )


@pytest.fixture(scope="module")
def step_by_step():
    """The engine with jump-forward off: every token its own decode step."""
    from mcp_server.engines.embedded.engine import EmbeddedEngine

    engine = EmbeddedEngine(max_batch_size=8, jump_forward=False)
    asyncio.run(engine.start())
    yield engine
    asyncio.run(engine.aclose())


def generate(engine, requests: list[GenerationRequest]):
    """Run ``requests`` together; return each one's deltas and the decode steps they took."""

    async def main():
        before = engine.step_stats.decode_steps
        results = await asyncio.gather(*[_collect(engine, r) for r in requests])
        return results, engine.step_stats.decode_steps - before

    return asyncio.run(main())


async def _collect(engine, req):
    return [delta async for delta in engine.generate(req)]


def _same_answers(fast, slow) -> None:
    for jumped, stepped in zip(fast, slow, strict=True):
        assert "".join(d.text for d in jumped) == "".join(d.text for d in stepped)
        assert [(e.token, e.logprob, e.top_logprobs) for d in jumped for e in d.logprobs] == [
            (e.token, e.logprob, e.top_logprobs) for d in stepped for e in d.logprobs
        ]
        assert jumped[-1].finish_reason == stepped[-1].finish_reason == "stop"
        assert jumped[-1].completion_tokens == stepped[-1].completion_tokens
        jsonschema.validate(json.loads("".join(d.text for d in jumped)), SCHEMA)


def test_forced_keys_take_fewer_steps_alone_and_give_exactly_the_one_token_steps_answers(engine, step_by_step):
    for req in [request(PROMPTS[0]), request(PROMPTS[1], temperature=0.9, seed=11)]:
        accepted = engine.step_stats.accepted_drafts
        jumped, jumped_steps = generate(engine, [req])
        stepped, stepped_steps = generate(step_by_step, [req])
        assert engine.step_stats.accepted_drafts - accepted >= len(KEYS) - 1  # every key but the first's opening
        assert jumped_steps < stepped_steps
        assert len(jumped[0]) < len(stepped[0])  # a step's forced tokens went out as one delta
        _same_answers(jumped, stepped)
    assert step_by_step.step_stats.drafted_tokens == 0


def test_batched_rows_with_drafts_give_the_one_token_steps_answers(engine, step_by_step):
    """Rows feed as many drafts as every row has (:func:`.jumpforward.fed_depth`); whatever
    was fed, the answers are those of one-token steps. The step counts are not compared here:
    they depend on the step at which each request joins the batch (its prompt is rendered and
    its grammar compiled in a thread), which differs between runs (a fresh clone's run took
    139 steps with jump-forward against 138 without); the lone-request test compares them."""
    requests = [request(p) for p in PROMPTS] + [request(p, temperature=0.9, seed=11) for p in PROMPTS]
    jumped, _ = generate(engine, requests)
    stepped, _ = generate(step_by_step, requests)
    _same_answers(jumped, stepped)


def test_streamed_equals_non_streamed_with_forced_tokens(client):
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": PROMPTS[0]}],
        "max_tokens": 160,
        "temperature": 0,
        "logprobs": True,
        "response_format": {"type": "json_schema", "json_schema": {"name": "person", "schema": SCHEMA}},
    }
    whole = client.chat.completions.create(**body)
    chunks = list(client.chat.completions.create(**body, stream=True))
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == whole.choices[0].message.content
    jsonschema.validate(json.loads(streamed), SCHEMA)
    streamed_logprobs = [e.logprob for c in chunks if c.choices and c.choices[0].logprobs for e in c.choices[0].logprobs.content]
    assert streamed_logprobs == [e.logprob for e in whole.choices[0].logprobs.content]
