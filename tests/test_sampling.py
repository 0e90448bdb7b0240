"""Next-token selection: greedy, top-k, top-p, penalties, per-row randomness."""

from __future__ import annotations

import numpy as np

from mcp_server.engines.base import SamplingParams
from mcp_server.engines.embedded.sampling import apply_bitmask, apply_penalties, draw_uniforms, new_generator, sample

LOGITS = np.array([[1.0, 3.0, 2.0, 0.0], [0.5, 0.1, 0.2, 4.0]], dtype=np.float32)


def test_temperature_zero_takes_the_argmax():
    tokens = sample(LOGITS.copy(), [SamplingParams(temperature=0)] * 2, np.array([0.99, 0.99]))
    assert tokens.tolist() == [1, 3]


def test_top_k_one_and_tiny_top_p_behave_like_greedy():
    params = [SamplingParams(temperature=1.5, top_k=1), SamplingParams(temperature=1.5, top_p=1e-6)]
    assert sample(LOGITS.copy(), params, np.array([0.99, 0.99])).tolist() == [1, 3]


def test_the_uniform_draw_walks_the_distribution_in_probability_order():
    logits = np.log(np.array([[0.1, 0.6, 0.3]]))
    params = [SamplingParams(temperature=1.0)]
    picks = [sample(logits.copy(), params, np.array([u])).item() for u in (0.0, 0.59, 0.61, 0.89, 0.91)]
    assert picks == [1, 1, 2, 2, 0]


def test_top_p_drops_the_tail():
    logits = np.log(np.array([[0.1, 0.6, 0.3]]))
    params = [SamplingParams(temperature=1.0, top_p=0.8)]  # keeps 0.6 and 0.3
    assert sample(logits.copy(), params, np.array([0.999])).item() == 2


def test_banned_tokens_are_never_sampled():
    logits = np.array([[0.0, -np.inf, 0.0, -np.inf]])
    params = [SamplingParams(temperature=2.0)]
    picks = {sample(logits.copy(), params, np.array([u / 10])).item() for u in range(10)}
    assert picks == {0, 2}


def test_a_row_does_not_depend_on_its_neighbours():
    params = [SamplingParams(temperature=0.8, top_p=0.9), SamplingParams(temperature=0)]
    alone = sample(LOGITS[:1].copy(), params[:1], np.array([0.7]))
    batched = sample(LOGITS.copy(), params, np.array([0.7, 0.1]))
    assert batched[0] == alone[0]


def test_penalties_follow_the_openai_formula():
    logits = np.zeros((1, 3), dtype=np.float32)
    counts = np.array([[0.0, 1.0, 3.0]])
    apply_penalties(logits, counts, presence=np.array([0.5]), frequency=np.array([0.25]))
    assert logits.tolist() == [[0.0, -0.75, -1.25]]


def test_seeded_generators_repeat_their_draws():
    first = draw_uniforms([new_generator(7), new_generator(8)])
    again = draw_uniforms([new_generator(7), new_generator(8)])
    assert first.tolist() == again.tolist()
    assert first[0] != first[1]


def test_a_top_p_that_is_zero_in_float32_and_a_top_k_past_the_vocabulary_are_safe():
    # 1e-46 becomes 0.0 in float32: the most likely token must still be kept, never the least.
    params = [SamplingParams(temperature=1.0, top_p=1e-46), SamplingParams(temperature=1.0, top_k=10**30)]
    assert sample(LOGITS.copy(), params, np.array([0.99, 0.0])).tolist() == [1, 3]


def test_near_zero_temperature_or_top_p_parse_as_greedy():
    from mcp_server.protocol.request import parse_request

    for extra in ({"temperature": 1e-38}, {"temperature": 1, "top_p": 1e-46}):
        sampling = parse_request({"messages": [{"role": "user", "content": "hi"}], **extra}).generation.sampling
        assert (sampling.temperature, sampling.top_p) == (0.0, 1.0)


def test_the_seeded_stream_is_numpys_pcg64():
    # Documented in the README: seeds draw from numpy's PCG64 (earlier builds drew from torch's).
    assert draw_uniforms([new_generator(0)])[0] == np.random.Generator(np.random.PCG64(0)).random()


def test_the_bitmask_bans_exactly_the_cleared_bits():
    logits = np.zeros((2, 40), dtype=np.float32)
    bitmask = np.full((2, 2), -1, dtype=np.int32)
    bitmask[0, 0] = 0b101  # row 0: only tokens 0 and 2 of the first word, all of the second
    apply_bitmask(logits, bitmask)
    assert np.isfinite(logits[0]).tolist() == [i in (0, 2) or i >= 32 for i in range(40)]
    assert np.isfinite(logits[1]).all()


def test_the_head_walk_equals_a_full_sort():
    rng = np.random.default_rng(0)
    for _ in range(300):
        vocab = int(rng.integers(3, 3000))
        logits = (rng.standard_normal(vocab) * rng.uniform(0.1, 8)).astype(np.float32)
        p = SamplingParams(temperature=float(rng.uniform(0.2, 2)), top_p=float(rng.choice([1.0, 0.9, 0.5])), top_k=int(rng.choice([0, 5, 100])))
        u = float(rng.random())
        scaled = logits.astype(np.float64) / p.temperature
        order = np.lexsort((np.arange(vocab), -scaled))
        values = scaled[order].copy()
        if 0 < p.top_k < vocab:
            values[p.top_k :] = -np.inf
        probs = np.exp(values - values[0])
        probs /= probs.sum()
        kept = max(1, int(np.count_nonzero(np.cumsum(probs) - probs < np.float32(p.top_p))))
        cumulative = np.cumsum(probs[:kept])
        expected = order[min(int(np.searchsorted(cumulative, u * cumulative[-1], side="right")), kept - 1)]
        assert sample(logits[None].copy(), [p], np.array([u]))[0] == expected
