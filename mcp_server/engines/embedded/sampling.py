"""Next-token selection for a batch of rows: penalties, temperature, top-k, top-p, and the
log-probabilities of what was drawn.

Every function works on a whole batch at once. A row's result depends only on its own
logits, settings and random draw, never on the other rows, so a seeded request gives the
same tokens alone or batched.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from mcp_server.engines.base import SamplingParams

__all__ = ["apply_penalties", "draw_uniforms", "sample", "seeded_generator", "token_logprobs"]


def apply_penalties(
    logits: torch.Tensor,
    counts: torch.Tensor,
    presence: torch.Tensor,
    frequency: torch.Tensor,
) -> None:
    """Apply OpenAI's presence and frequency penalties in place.

    ``logits[j] -= counts[j] * frequency + (counts[j] > 0) * presence``, row by row.

    Args:
        logits: float32 ``[B, V]``, changed in place.
        counts: ``[B, V]`` how often each token was generated so far in each row.
        presence: float32 ``[B]`` presence penalties.
        frequency: float32 ``[B]`` frequency penalties.
    """
    logits -= counts * frequency[:, None] + (counts > 0) * presence[:, None]


def seeded_generator(seed: int | None) -> torch.Generator:
    """A sequence's random generator: seeded with ``seed`` (the same draws every time), or
    from the OS when None."""
    generator = torch.Generator()
    if seed is None:
        generator.seed()
    else:
        generator.manual_seed(seed)
    return generator


def draw_uniforms(generators: Sequence[torch.Generator]) -> torch.Tensor:
    """Draw one number in ``[0, 1)`` per row, each from that row's own generator.

    Args:
        generators: one generator per row.

    Returns:
        float32 ``[B]``.
    """
    return torch.cat([torch.rand(1, generator=g) for g in generators])


def sample(logits: torch.Tensor, params: Sequence[SamplingParams], uniforms: torch.Tensor) -> torch.Tensor:
    """Pick one token per row.

    Rows with temperature 0 take the argmax. The others are scaled by their temperature,
    cut to their top-k and top-p tokens (at least one is always kept), and sampled by
    inverse transform with their uniform draw, so the choice is fixed by the draw.

    Args:
        logits: float32 ``[B, V]``; banned tokens may be ``-inf`` (at least one must not be).
        params: the sampling settings of each row (``B`` of them).
        uniforms: float32 ``[B]`` draws in ``[0, 1)``; ignored for greedy rows.

    Returns:
        int64 ``[B]`` token ids.
    """
    tokens = logits.argmax(dim=-1)
    rows = [i for i, p in enumerate(params) if p.temperature > 0]
    if not rows:
        return tokens
    picked = [params[i] for i in rows]
    temperature = torch.tensor([p.temperature for p in picked])
    top_p = torch.tensor([p.top_p for p in picked])
    vocab = logits.shape[-1]
    top_k = torch.tensor([min(p.top_k or 0, vocab) for p in picked])  # past the vocabulary: no cut

    scaled = logits[rows] / temperature[:, None]
    sorted_logits, order = scaled.sort(dim=-1, descending=True)
    rank = torch.arange(scaled.shape[-1])
    beyond_k = (top_k[:, None] > 0) & (rank[None, :] >= top_k[:, None])
    probs = sorted_logits.masked_fill(beyond_k, float("-inf")).softmax(dim=-1)
    # Keep the smallest prefix whose mass reaches top_p: a token goes when the mass
    # before it already does. The first token always stays.
    beyond_p = (probs.cumsum(dim=-1) - probs >= top_p[:, None]) & (rank[None, :] > 0)
    probs = probs.masked_fill(beyond_p, 0.0)
    cumulative = probs.cumsum(dim=-1)
    target = uniforms[rows] * cumulative[:, -1]
    choice = torch.searchsorted(cumulative, target[:, None], right=True).clamp_(max=scaled.shape[-1] - 1)
    tokens[rows] = order.gather(1, choice).squeeze(1)
    return tokens


def token_logprobs(
    logits: torch.Tensor, temperatures: torch.Tensor, tokens: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Log-probabilities of the distribution :func:`sample` draws from, for OpenAI ``logprobs``.

    ``log_softmax(logits / temperature)`` per row, with the logits as :func:`sample` gets
    them (penalized, grammar-masked); a temperature-0 row uses its logits as they are.
    The top-k / top-p cut is not applied, so a token it removed keeps its probability.
    Tokens a grammar bans (``-inf``) get ``-inf``.

    Args:
        logits: float32 ``[B, V]``; not changed.
        temperatures: float32 ``[B]``, each >= 0.
        tokens: int64 ``[B]``, the tokens drawn.
        k: alternatives to return per row, 0..V.

    Returns:
        ``(chosen, top_values, top_ids)``: float32 ``[B]`` the drawn tokens' log-probabilities,
        float32 ``[B, k]`` the k largest log-probabilities in descending order, int64
        ``[B, k]`` their token ids.
    """
    scale = torch.where(temperatures > 0, temperatures, torch.ones_like(temperatures))
    logprobs = (logits / scale[:, None]).log_softmax(dim=-1)
    top = logprobs.topk(k, dim=-1)
    return logprobs.gather(1, tokens[:, None]).squeeze(1), top.values, top.indices
