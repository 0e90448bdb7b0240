"""How the scheduler picks each row's token from the runner's logits: penalties, grammar
masks, sampling, and the log-probability entries asked for; in numpy, the same for every runner."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np

from mcp_server.engines.base import TokenLogprob
from mcp_server.engines.embedded.decoding.backends import allocate_bitmask, fill_masks
from mcp_server.engines.embedded.sampling import (
    apply_bitmask,
    apply_penalties,
    draw_uniforms,
    sample,
    token_logprobs,
)
from mcp_server.engines.embedded.sequence import Sequence

__all__ = ["Chooser"]


class Chooser:
    """Picks tokens for rows of sequences.

    Args:
        vocab: each token id's raw bytes (the grammar backend's ``vocab``), for
            log-probability entries; ids beyond it read as ``b""``.
        vocab_size: logits per row, ``V``.
    """

    def __init__(self, vocab: list[bytes], vocab_size: int):
        self._vocab = vocab
        self._vocab_size = vocab_size

    def choose(self, rows: list[Sequence], logits: np.ndarray) -> tuple[list[int], list[TokenLogprob | None]]:
        """Apply penalties and grammars to ``logits`` (``[B, V]``, in place) and pick tokens.

        Returns:
            The token of each row, and its log-probability entry (:meth:`logprobs`) for
            the rows that asked for one, else None.
        """
        penalized = [i for i, seq in enumerate(rows) if seq.counts is not None]
        if penalized:
            subset = logits[penalized]
            apply_penalties(
                subset,
                np.stack([rows[i].counts for i in penalized]),
                np.array([rows[i].sampling.presence_penalty for i in penalized], dtype=np.float32),
                np.array([rows[i].sampling.frequency_penalty for i in penalized], dtype=np.float32),
            )
            logits[penalized] = subset
        constrained = [i for i, seq in enumerate(rows) if seq.matcher is not None]
        if constrained:
            bitmask = allocate_bitmask(len(constrained), self._vocab_size)
            fill_masks([(rows[i].matcher, k) for k, i in enumerate(constrained)], bitmask)
            apply_bitmask(logits, bitmask, constrained)
        params = [seq.sampling for seq in rows]
        sampled = [seq.generator for seq in rows if seq.sampling.temperature > 0]
        uniforms = np.zeros(len(rows))
        if sampled:
            uniforms[[i for i, p in enumerate(params) if p.temperature > 0]] = draw_uniforms(sampled)
        tokens = sample(logits, params, uniforms)
        return tokens.tolist(), self.logprobs(rows, logits, tokens)

    def logprobs(self, rows: list[Sequence], logits: np.ndarray, tokens: np.ndarray) -> list[TokenLogprob | None]:
        """The log-probability entries of the rows that asked, from the logits they were drawn from.

        See :func:`.sampling.token_logprobs`: the penalized, grammar-masked logits over the
        temperature. Alternatives the grammar bans (probability 0) are never listed, so
        under a grammar a row may get fewer than it asked for. Rows that did not ask cost
        nothing.
        """
        entries: list[TokenLogprob | None] = [None] * len(rows)
        asked = [i for i, seq in enumerate(rows) if seq.top_logprobs is not None]
        if not asked:
            return entries
        k = max(rows[i].top_logprobs for i in asked)
        temperatures = np.array([rows[i].sampling.temperature for i in asked], dtype=np.float32)
        chosen, values, ids = token_logprobs(logits[asked], temperatures, tokens[asked], k)
        for j, i in enumerate(asked):
            n = rows[i].top_logprobs
            top = tuple(
                self._entry(token, logprob)
                for token, logprob in zip(ids[j, :n].tolist(), values[j, :n].tolist(), strict=True)
                if logprob > -math.inf
            )
            entries[i] = replace(self._entry(int(tokens[i]), float(chosen[j])), top_logprobs=top)
        return entries

    def _entry(self, token: int, logprob: float) -> TokenLogprob:
        """A log-probability entry for ``token``: its text, bytes and ``logprob``."""
        raw = self._vocab[token] if token < len(self._vocab) else b""
        return TokenLogprob(raw.decode("utf-8", errors="replace"), logprob, raw)

