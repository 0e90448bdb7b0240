"""Next-token selection: greedy, top-k, top-p, penalties, per-row randomness."""

from __future__ import annotations

import torch

from mcp_server.engines.base import SamplingParams
from mcp_server.engines.embedded.sampling import apply_penalties, draw_uniforms, sample

LOGITS = torch.tensor([[1.0, 3.0, 2.0, 0.0], [0.5, 0.1, 0.2, 4.0]])


def test_temperature_zero_takes_the_argmax():
    tokens = sample(LOGITS.clone(), [SamplingParams(temperature=0)] * 2, torch.tensor([0.99, 0.99]))
    assert tokens.tolist() == [1, 3]


def test_top_k_one_and_tiny_top_p_behave_like_greedy():
    params = [SamplingParams(temperature=1.5, top_k=1), SamplingParams(temperature=1.5, top_p=1e-6)]
    assert sample(LOGITS.clone(), params, torch.tensor([0.99, 0.99])).tolist() == [1, 3]


def test_the_uniform_draw_walks_the_distribution_in_probability_order():
    logits = torch.log(torch.tensor([[0.1, 0.6, 0.3]]))
    params = [SamplingParams(temperature=1.0)]
    picks = [sample(logits.clone(), params, torch.tensor([u])).item() for u in (0.0, 0.59, 0.61, 0.89, 0.91)]
    assert picks == [1, 1, 2, 2, 0]


def test_top_p_drops_the_tail():
    logits = torch.log(torch.tensor([[0.1, 0.6, 0.3]]))
    params = [SamplingParams(temperature=1.0, top_p=0.8)]  # keeps 0.6 and 0.3
    assert sample(logits.clone(), params, torch.tensor([0.999])).item() == 2


def test_banned_tokens_are_never_sampled():
    logits = torch.tensor([[0.0, float("-inf"), 0.0, float("-inf")]])
    params = [SamplingParams(temperature=2.0)]
    picks = {sample(logits.clone(), params, torch.tensor([u / 10])).item() for u in range(10)}
    assert picks == {0, 2}


def test_a_row_does_not_depend_on_its_neighbours():
    params = [SamplingParams(temperature=0.8, top_p=0.9), SamplingParams(temperature=0)]
    alone = sample(LOGITS[:1].clone(), params[:1], torch.tensor([0.7]))
    batched = sample(LOGITS.clone(), params, torch.tensor([0.7, 0.1]))
    assert batched[0] == alone[0]


def test_penalties_follow_the_openai_formula():
    logits = torch.zeros(1, 3)
    counts = torch.tensor([[0.0, 1.0, 3.0]])
    apply_penalties(logits, counts, presence=torch.tensor([0.5]), frequency=torch.tensor([0.25]))
    assert logits.tolist() == [[0.0, -0.75, -1.25]]


def test_seeded_generators_repeat_their_draws():
    first = draw_uniforms([torch.Generator().manual_seed(7), torch.Generator().manual_seed(8)])
    again = draw_uniforms([torch.Generator().manual_seed(7), torch.Generator().manual_seed(8)])
    assert first.tolist() == again.tolist()
    assert first[0] != first[1]


def test_a_top_p_that_is_zero_in_float32_and_a_top_k_past_the_vocabulary_are_safe():
    # 1e-46 becomes 0.0 in float32: the most likely token must still be kept, never the least.
    params = [SamplingParams(temperature=1.0, top_p=1e-46), SamplingParams(temperature=1.0, top_k=10**30)]
    assert sample(LOGITS.clone(), params, torch.tensor([0.99, 0.0])).tolist() == [1, 3]


def test_near_zero_temperature_or_top_p_parse_as_greedy():
    from mcp_server.protocol.request import parse_request

    for extra in ({"temperature": 1e-38}, {"temperature": 1, "top_p": 1e-46}):
        sampling = parse_request({"messages": [{"role": "user", "content": "hi"}], **extra}).generation.sampling
        assert (sampling.temperature, sampling.top_p) == (0.0, 1.0)
