"""Next-token selection for a batch of rows: penalties, grammar masks, temperature, top-k,
top-p, and the log-probabilities of what was drawn, in numpy on float32 logits.

Every function works on a whole batch at once. A row's result depends only on its own
logits, settings and random draw, never on the other rows, so a seeded request gives the
same tokens alone or batched. Nothing here imports torch: the llama.cpp runner's serving
path runs without it (the torch runner hands its logits over as numpy too).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np

from mcp_server.engines.base import SamplingParams

__all__ = ["apply_bitmask", "apply_penalties", "draw_uniforms", "new_generator", "sample", "token_logprobs"]


def apply_penalties(logits: np.ndarray, counts: np.ndarray, presence: np.ndarray, frequency: np.ndarray) -> None:
    """Apply OpenAI's presence and frequency penalties in place.

    ``logits[j] -= counts[j] * frequency + (counts[j] > 0) * presence``, row by row.

    Args:
        logits: float32 ``[B, V]``, changed in place.
        counts: ``[B, V]`` how often each token was generated so far in each row.
        presence: float32 ``[B]`` presence penalties.
        frequency: float32 ``[B]`` frequency penalties.
    """
    logits -= (counts * frequency[:, None] + (counts > 0) * presence[:, None]).astype(np.float32)


def apply_bitmask(logits: np.ndarray, bitmask: np.ndarray, rows: list[int] | None = None) -> None:
    """Set the logits of the tokens a grammar bans to ``-inf``, in place.

    Args:
        logits: float32 ``[B, V]``, no ``+inf``.
        bitmask: int32 ``[R, ceil(V / 32)]``, bit ``j % 32`` of word ``j // 32`` set when token
            ``j`` is allowed (the layout xgrammar and llguidance fill).
        rows: the ``R`` rows of ``logits`` the bitmask's rows are for (distinct); None: all.
    """
    # Unpacked to one bool per token, then -inf written where a bit is clear: 2.4x faster
    # than adding a gathered 0/-inf bias (measured, 8 rows of 49,152 tokens: 0.7 against 1.6 ms).
    banned = np.unpackbits(bitmask.view(np.uint8), axis=-1, count=logits.shape[1], bitorder="little").view(bool)
    np.logical_not(banned, out=banned)
    if rows is None or len(rows) == len(logits):
        np.copyto(logits, -np.inf, where=banned)
    else:
        subset = logits[rows]
        np.copyto(subset, -np.inf, where=banned)
        logits[rows] = subset


def new_generator(seed: int | None) -> np.random.Generator:
    """A row's random source: numpy's PCG64, seeded with ``seed`` (None: fresh OS entropy).

    A seed gives the same stream on every machine and numpy version that keeps PCG64's
    stream (numpy's policy for ``Generator``). Earlier chatcap builds drew from torch's
    generator, so a seed recorded with them draws different tokens now.
    """
    return np.random.Generator(np.random.PCG64(seed))


def draw_uniforms(generators: Sequence[np.random.Generator]) -> np.ndarray:
    """Draw one number in ``[0, 1)`` per row, each from that row's own generator.

    Returns:
        float64 ``[B]``.
    """
    return np.array([g.random() for g in generators], dtype=np.float64)


def sample(logits: np.ndarray, params: Sequence[SamplingParams], uniforms: np.ndarray) -> np.ndarray:
    """Pick one token per row.

    Rows with temperature 0 take the argmax. The others are scaled by their temperature,
    cut to their top-k and top-p tokens (at least one is always kept), and sampled by
    inverse transform with their uniform draw, so the choice is fixed by the draw.

    Args:
        logits: float32 ``[B, V]``; banned tokens may be ``-inf`` (at least one must not be).
        params: the sampling settings of each row (``B`` of them).
        uniforms: ``[B]`` draws in ``[0, 1)``; ignored for greedy rows.

    Returns:
        int64 ``[B]`` token ids.
    """
    tokens = logits.argmax(axis=-1).astype(np.int64)
    for i, p in enumerate(params):
        if p.temperature > 0:
            tokens[i] = _sample_row(logits[i], p, float(uniforms[i]))
    return tokens


def _sample_row(logits: np.ndarray, p: SamplingParams, uniform: float) -> int:
    """One row of :func:`sample`.

    Walks the tokens in descending probability (ties by id) over a growing sorted head
    (64, 512, ... candidates) instead of sorting the whole vocabulary: the answer is the
    same as with a full sort, since the walk stops inside the head whenever the head holds
    the drawn token and the end of the top-p prefix.
    """
    scaled = logits.astype(np.float64) / p.temperature
    k = min(p.top_k or 0, scaled.shape[-1])  # 0 or past the vocabulary: no cut
    if 0 < k < scaled.shape[-1]:
        pool = np.argpartition(-scaled, k - 1)[:k]
        pool = pool[scaled[pool] > -np.inf]  # banned tokens never enter the walk
    else:  # the whole vocabulary less the banned tokens (no copy when none is banned)
        allowed = scaled > -np.inf
        pool = _identity(len(scaled)) if allowed.all() else np.flatnonzero(allowed)
    values = scaled if len(pool) == len(scaled) else scaled[pool]
    weights = np.exp(values - values.max())
    total = weights.sum()
    head = 64
    while True:
        head = min(head, len(pool))
        part = np.argpartition(-weights, head - 1)[:head] if head < len(pool) else np.arange(len(pool))
        part = part[np.lexsort((pool[part], -weights[part]))]
        probs = weights[part] / total
        cumulative = np.cumsum(probs)
        # Keep the smallest prefix whose mass reaches top_p: a token goes when the mass
        # before it already does. The first token always stays.
        kept = max(1, int(np.count_nonzero(cumulative - probs < np.float32(p.top_p))))
        if head == len(pool) or kept < head:  # the whole top-p prefix is in the head
            choice = int(np.searchsorted(cumulative[:kept], uniform * cumulative[kept - 1], side="right"))
            return int(pool[part[min(choice, kept - 1)]])
        if p.top_p >= 1:  # everything is kept: the mass is 1, and the draw may land in the head
            choice = int(np.searchsorted(cumulative, uniform, side="right"))
            if choice < head:
                return int(pool[part[choice]])
        head *= 8


@functools.cache
def _identity(size: int) -> np.ndarray:
    """``arange(size)``, made once per size and read-only (the pool of an unconstrained row)."""
    ids = np.arange(size)
    ids.flags.writeable = False
    return ids


def token_logprobs(
    logits: np.ndarray, temperatures: np.ndarray, tokens: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
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
    scale = np.where(temperatures > 0, temperatures, 1.0).astype(np.float32)
    scaled = logits / scale[:, None]
    peak = scaled.max(axis=-1, keepdims=True)
    with np.errstate(divide="ignore"):
        logprobs = scaled - peak - np.log(np.exp(scaled - peak).sum(axis=-1, keepdims=True))
    rows = np.arange(len(tokens))
    if k > 0:
        top = np.argpartition(-logprobs, k - 1, axis=-1)[:, :k] if k < logprobs.shape[-1] else np.tile(np.arange(logprobs.shape[-1]), (len(tokens), 1))
        top_values = np.take_along_axis(logprobs, top, axis=-1)
        order = np.lexsort((top, -top_values), axis=-1)
        top_ids = np.take_along_axis(top, order, axis=-1)
        top_values = np.take_along_axis(top_values, order, axis=-1)
    else:
        top_ids = np.zeros((len(tokens), 0), dtype=np.int64)
        top_values = np.zeros((len(tokens), 0), dtype=np.float32)
    return logprobs[rows, tokens].astype(np.float32), top_values.astype(np.float32), top_ids.astype(np.int64)
