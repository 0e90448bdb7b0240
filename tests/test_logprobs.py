"""OpenAI ``logprobs`` / ``top_logprobs`` end to end: the official ``openai`` client against a live server."""

from __future__ import annotations

import math

from mcp_server.capability.schemas import validate

MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
# The model answers "1. 1\n2. ...": the stop strings never come, but a "." or "\n" is held
# back until the next token shows it does not start one; those tokens' logprobs travel in
# chunks whose delta has no text.
COUNT = {
    "model": MODEL, "messages": [{"role": "user", "content": "Count from 1 to 20, separated by commas."}],
    "max_tokens": 8, "temperature": 0, "stop": [". 0", "\n\n\n"], "logprobs": True, "top_logprobs": 3,
}


def _check_entries(entries, k):
    for entry in entries:
        assert entry.logprob <= 0
        assert len(entry.top_logprobs) == k
        assert (entry.top_logprobs[0].token, entry.top_logprobs[0].logprob) == (entry.token, entry.logprob)  # greedy
        top = [t.logprob for t in entry.top_logprobs]
        assert top == sorted(top, reverse=True)
        assert sum(math.exp(p) for p in top) <= 1 + 1e-5
        for token in (entry, *entry.top_logprobs):
            assert token.bytes is not None and token.bytes and all(0 <= b < 256 for b in token.bytes)
            if "\ufffd" not in token.token:
                assert bytes(token.bytes) == token.token.encode()


def test_logprobs_streamed_and_not(client):
    whole = client.chat.completions.create(**COUNT)
    validate("chat-completion-response.json", whole.model_dump(exclude_unset=True))
    choice = whole.choices[0]
    entries = choice.logprobs.content
    assert choice.finish_reason == "length"
    assert len(entries) == whole.usage.completion_tokens == 8
    _check_entries(entries, 3)
    assert b"".join(bytes(e.bytes) for e in entries).decode() == choice.message.content

    chunks = list(client.chat.completions.create(**COUNT, stream=True))
    for chunk in chunks:
        validate("chat-completion-chunk.json", chunk.model_dump(exclude_unset=True))
    streamed = [e for c in chunks if c.choices and c.choices[0].logprobs for e in c.choices[0].logprobs.content]
    assert [e.model_dump() for e in streamed] == [e.model_dump() for e in entries]
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == choice.message.content
    assert any(c.choices[0].logprobs and not c.choices[0].delta.content for c in chunks)  # held-back text


def test_logprobs_are_null_unless_asked(client):
    plain = {key: value for key, value in COUNT.items() if key not in ("logprobs", "top_logprobs")}
    assert client.chat.completions.create(**plain).choices[0].logprobs is None
    chunks = list(client.chat.completions.create(**plain, stream=True))
    assert all(c.choices[0].logprobs is None for c in chunks)


def test_top_logprobs_list_only_tokens_the_grammar_allows(client):
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    completion = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Give a number as JSON."}], max_tokens=8,
        temperature=0, logprobs=True, top_logprobs=20,
        response_format={"type": "json_schema", "json_schema": {"name": "n", "schema": schema}},
    )
    entries = completion.choices[0].logprobs.content
    assert len(entries) == completion.usage.completion_tokens
    assert all(math.isfinite(t.logprob) for e in entries for t in e.top_logprobs)
    # Where the grammar allows fewer than 20 tokens all are listed, and their mass is the whole.
    few = [e for e in entries if len(e.top_logprobs) < 20]
    assert few
    for entry in few:
        assert math.isclose(sum(math.exp(t.logprob) for t in entry.top_logprobs), 1.0, abs_tol=1e-3)
