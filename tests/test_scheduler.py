"""The scheduler's chunked prefill, fairness between tenants, per-tenant cap and preemption,
on the real llama.cpp runner and bundled model. Assertions are on the order of events (which
sequence emitted what, relative to the others), never on elapsed time."""

from __future__ import annotations

import threading
import time

import hypothesis
import pytest
from hypothesis import strategies as st

from mcp_server.engines.base import GenerationDelta, SamplingParams
from mcp_server.engines.embedded.model_files import default_gguf_path
from mcp_server.engines.embedded.policy import MIN_PROMPT_CHUNK, Limits, chunk_cost, prompt_chunk
from mcp_server.engines.embedded.prompt import render_prompt
from mcp_server.engines.embedded.runners.llamacpp import LlamaCppRunner
from mcp_server.engines.embedded.sampling import new_generator
from mcp_server.engines.embedded.scheduler import Scheduler, Sequence
from mcp_server.engines.embedded.textstream import TextStream

TIMEOUT = 300  # seconds; a generous bound for a busy machine, never a measurement


@pytest.fixture(scope="module")
def runner():
    runner = LlamaCppRunner(default_gguf_path(), 3, 1024, 1)
    yield runner
    runner.close()


class Log:
    """Thread-safe record of ``(name, event)``: ``first`` (first token), ``token``, ``finish``, ``mark``."""

    def __init__(self):
        self.events: list[tuple[str, str]] = []
        self.texts: dict[str, str] = {}
        self._lock = threading.Lock()

    def emit(self, name: str):
        def emit(item: GenerationDelta | Exception) -> None:
            assert isinstance(item, GenerationDelta), item
            with self._lock:
                self.texts[name] = self.texts.get(name, "") + item.text
                self.events.append((name, "first" if item.completion_tokens == 1 else "token"))
                if item.finish_reason is not None:
                    self.events.append((name, "finish"))

        return emit

    def mark(self, name: str) -> None:
        with self._lock:
            self.events.append((name, "mark"))

    def index(self, name: str, event: str) -> int:
        return self.events.index((name, event))

    def wait(self, name: str, event: str) -> None:
        deadline = time.monotonic() + TIMEOUT
        while (name, event) not in self.events:
            assert time.monotonic() < deadline, f"{name} never emitted {event}: {self.events}"
            time.sleep(0.01)


def _sequence(tokenizer, log: Log, name: str, content: str, tenant: str, max_new_tokens: int = 8) -> Sequence:
    return Sequence(
        prompt_ids=render_prompt(tokenizer, [{"role": "user", "content": content}]),
        max_new_tokens=max_new_tokens,
        sampling=SamplingParams(temperature=0.0),
        text=TextStream(lambda ids: tokenizer.decode(ids, skip_special_tokens=True)),
        emit=log.emit(name),
        generator=new_generator(None),
        tenant=tenant,
        cache_scope=tenant,
    )


def _scheduler(runner, batch: int, chunk: int | None = 64, cap: int | None = None) -> Scheduler:
    return Scheduler(runner, runner.eos_ids, batch, limits=Limits(chunk, cap))


def _solo(runner, tokenizer, content: str, max_new_tokens: int) -> str:
    """The greedy answer of ``content`` alone, prompts prefilled whole."""
    log, scheduler = Log(), _scheduler(runner, 1, chunk=None)
    scheduler.submit(_sequence(tokenizer, log, "solo", content, "x", max_new_tokens))
    scheduler.start()
    try:
        log.wait("solo", "finish")
    finally:
        scheduler.stop()
    return log.texts["solo"]


def test_a_waiting_tenant_gets_the_next_slot_before_a_tenant_running_one(runner, tokenizer):
    """Tenant a queues three sequences before tenant b queues one; with two slots, b's runs
    beside a's first instead of after a's second (first come, first served would admit a, a)."""
    log, scheduler = Log(), _scheduler(runner, 2)
    for i in range(3):
        scheduler.submit(_sequence(tokenizer, log, f"a{i}", f"Count to {i + 3}.", "a"))
    scheduler.submit(_sequence(tokenizer, log, "b0", "Name a color.", "b"))
    scheduler.start()
    try:
        for name in ("a0", "a1", "a2", "b0"):
            log.wait(name, "finish")
    finally:
        scheduler.stop()
    assert log.index("b0", "first") < log.index("a1", "first")
    assert log.index("a1", "first") > min(log.index("a0", "finish"), log.index("b0", "finish"))  # a1 waited for a slot
    assert scheduler.running == 0


def test_per_tenant_cap_keeps_a_sequence_waiting_despite_a_free_slot(runner, tokenizer):
    """With ``max_running_per_tenant`` 1 and three slots, tenant a's second sequence starts only
    after its first finished, while tenant b's runs at once."""
    log, scheduler = Log(), _scheduler(runner, 3, cap=1)
    scheduler.submit(_sequence(tokenizer, log, "a0", "Count to five.", "a"))
    scheduler.submit(_sequence(tokenizer, log, "a1", "Count to six.", "a"))
    scheduler.submit(_sequence(tokenizer, log, "b0", "Name a color.", "b"))
    scheduler.start()
    try:
        for name in ("a0", "a1", "b0"):
            log.wait(name, "finish")
    finally:
        scheduler.stop()
    assert log.index("b0", "first") < log.index("a0", "finish")
    assert log.index("a1", "first") > log.index("a0", "finish")


def test_a_tenant_holding_every_slot_is_preempted_and_its_answers_do_not_change(runner, tokenizer):
    """Tenant a runs on both slots (as ``n: 2`` would); tenant b arrives and gets its first
    token before either of a's finishes: one of a's is preempted and resumed later, and both
    of a's greedy answers equal their answers alone, token for token."""
    contents = ["Write a long story about a cat.", "Write a long story about a dog."]
    solos = [_solo(runner, tokenizer, content, 40) for content in contents]
    log, scheduler = Log(), _scheduler(runner, 2)
    for i, content in enumerate(contents):
        scheduler.submit(_sequence(tokenizer, log, f"a{i}", content, "a", 40))
    scheduler.start()
    try:
        log.wait("a0", "first")
        log.wait("a1", "first")
        scheduler.submit(_sequence(tokenizer, log, "b0", "Name a color.", "b", 4))
        for name in ("a0", "a1", "b0"):
            log.wait(name, "finish")
    finally:
        scheduler.stop()
    assert log.index("b0", "first") < min(log.index("a0", "finish"), log.index("a1", "finish"))
    assert [log.texts["a0"], log.texts["a1"]] == solos


def test_a_long_prompt_is_prefilled_in_chunks_between_a_running_streams_steps(runner, tokenizer):
    """While a ~700-token prompt is prefilled 64 tokens a step (less the running row), the
    running stream keeps getting tokens: several of them come between the long prompt's
    arrival and its first token (prefilled whole, none would). Both answers equal their solo
    answers: chunking changes no logit."""
    document = " ".join(f"Item {i}: the quick brown fox jumps over the lazy dog." for i in range(50))
    long_question = f"{document}\nHow many items are listed?"
    stream_question = "Write a long story about a cat."
    solos = {"long": _solo(runner, tokenizer, long_question, 8), "stream": _solo(runner, tokenizer, stream_question, 60)}
    log, scheduler = Log(), _scheduler(runner, 2, chunk=64)
    long_sequence = _sequence(tokenizer, log, "long", long_question, "b", 8)
    assert len(long_sequence.prompt_ids) > 600
    scheduler.submit(_sequence(tokenizer, log, "stream", stream_question, "a", 60))
    scheduler.start()
    try:
        log.wait("stream", "first")
        log.mark("long")
        scheduler.submit(long_sequence)
        log.wait("long", "finish")
        log.wait("stream", "finish")
    finally:
        scheduler.stop()
    between = log.events[log.index("long", "mark") : log.index("long", "first")]
    assert sum(1 for name, _ in between if name == "stream") >= 5, between
    assert log.texts == solos


@hypothesis.settings(max_examples=300, deadline=None, database=None, derandomize=True)
@hypothesis.given(
    budget=st.floats(min_value=-500, max_value=4096),
    position=st.integers(min_value=0, max_value=200_000),
    span=st.one_of(st.none(), st.integers(min_value=1, max_value=4096)),
)
def test_a_prompt_chunk_is_the_longest_that_fits_the_budget_or_the_least_worth_a_call(budget, position, span):
    first, later = prompt_chunk(budget, position, span, True), prompt_chunk(budget, position, span, False)
    if chunk_cost(MIN_PROMPT_CHUNK, position, span) <= budget:
        assert first == later >= MIN_PROMPT_CHUNK
        assert chunk_cost(first, position, span) <= budget < chunk_cost(first + 1, position, span)
    else:  # too little budget: the step's first chunk still advances, a later one waits
        assert (first, later) == (MIN_PROMPT_CHUNK, 0)


def test_a_long_prompts_chunks_shrink_as_it_advances_and_each_fits_the_step(runner, tokenizer):
    """Over the q8_0 cache a late prompt token's attention costs several early tokens': the
    chunks the runner is asked for get shorter along a ~700-token prompt, and the cost of
    each (positions weighed by the runner's attention span) stays within the step's budget,
    so a running stream's gap does not grow with the other prompt's length."""
    chunks: list[tuple[int, int]] = []  # (position, tokens computed), from the real runner
    real_prefill = runner.prefill

    def recording_prefill(slot, max_tokens):
        computed, logits = real_prefill(slot, max_tokens)
        chunks.append((position[0], computed))
        position[0] += computed
        return computed, logits

    position = [0]
    document = " ".join(f"Item {i}: the quick brown fox jumps over the lazy dog." for i in range(50))
    log, scheduler = Log(), _scheduler(runner, 1, chunk=64)
    sequence = _sequence(tokenizer, log, "long", f"{document}\nHow many items?", "a", 1)
    runner.prefill = recording_prefill
    scheduler.start()
    try:
        scheduler.submit(sequence)
        log.wait("long", "finish")
    finally:
        scheduler.stop()
        del runner.prefill
    assert sum(n for _, n in chunks) == len(sequence.prompt_ids)
    assert all(n == MIN_PROMPT_CHUNK or chunk_cost(n, p, runner.attention_span) <= 64 for p, n in chunks[:-1]), chunks
    assert chunks[0][1] > 2 * chunks[-2][1], chunks


def test_limits_refuse_a_budget_that_leaves_prompts_no_room_and_a_cap_below_one():
    from mcp_server.errors import InvalidRequest

    assert Limits.resolve(None, None, 8) == Limits(64, None)
    assert Limits.resolve(None, None, 40) == Limits(80, None)
    assert Limits.resolve(-1, 2, 8, preempt=False) == Limits(None, 2, False)
    with pytest.raises(InvalidRequest, match="must exceed --max-running-requests") as refused:
        Limits.resolve(8, None, 8)
    assert refused.value.param == "chunked_prefill_size"
    with pytest.raises(InvalidRequest) as refused:
        Limits.resolve(None, 0, 8)
    assert refused.value.param == "max_running_requests_per_key"


def test_cache_salt_is_read_from_the_request_and_scopes_the_cache():
    from mcp_server.engines.embedded.policy import cache_scope
    from mcp_server.errors import InvalidRequest
    from mcp_server.protocol.request import parse_request

    body = {"messages": [{"role": "user", "content": "hi"}]}
    salted = parse_request({**body, "cache_salt": "s3cret"}).generation
    assert cache_scope(salted) == ("salt", "s3cret")
    assert cache_scope(parse_request(body).generation) == ("tenant", None)
    with pytest.raises(InvalidRequest) as refused:
        parse_request({**body, "cache_salt": ""})
    assert refused.value.param == "cache_salt"


def test_only_llama_cpp_over_q8_0_preempts():
    """Preemption needs a resumed sequence to compute the logits it had: llama.cpp over q8_0
    does (the test above); over f16, or on the torch runner, prompt rows take other kernels."""
    from mcp_server.engines.embedded.engine import EmbeddedEngine

    assert EmbeddedEngine()._limits.preempt
    assert not EmbeddedEngine(kv_cache_dtype="f16")._limits.preempt
    assert not EmbeddedEngine(runner="torch")._limits.preempt
