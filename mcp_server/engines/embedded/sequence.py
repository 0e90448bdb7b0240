"""The scheduler's state for one sequence: its prompt, sampling state and output so far."""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mcp_server.engines.base import GenerationDelta, SamplingParams
from mcp_server.engines.embedded.textstream import TextStream
from mcp_server.errors import ServiceError

__all__ = ["Sequence"]


@dataclass(eq=False)
class Sequence:
    """The scheduler's state for one sequence being generated.

    Attributes:
        prompt_ids: the rendered prompt's token ids.
        max_new_tokens: most tokens to generate (at least 1).
        sampling: the sampling settings.
        text: detokenizer and stop-string filter.
        emit: thread-safe callback taking a :class:`GenerationDelta` or a
            :class:`ServiceError`; called from the scheduler thread.
        generator: this sequence's random source.
        matcher: a :class:`.decoding.backends.GrammarMatcher` constraining the output, or None.
        counts: float32 ``[V]`` generated-token counts when a penalty is set, else None.
        top_logprobs: when the request asked for ``logprobs``, how many alternatives
            (0..20) to report with each token's log-probability; None when it did not.
        tenant: who sent it (fairness and ``max_running_per_tenant``); None is one tenant.
        cache_scope: the prefix-cache scope its prompt is computed in and may reuse
            (:meth:`.runners.ModelRunner.admit`).
        output_ids: the tokens generated so far.
        last_token: the most recent token, fed to the next decode step.
        drafts: tokens the grammar forces after ``last_token`` (jump-forward), fed after it
            in the next decode step and taken where sampling picks them (:mod:`.scheduler`).
        slot: the runner's handle for this sequence's cache, -1 while waiting.
        cached_tokens: leading prompt tokens the runner's prefix cache held at its first
            admission (not computed).
        computed: tokens of its prompt (and output so far, when readmitted) the runner holds
            since its latest admission: where its next prompt chunk starts.
        cancelled: set by the consumer when it stops listening.
        finished: set by the scheduler once the sequence no longer counts as running.
        arrival: submission order (the scheduler sets it).
        admitted: order of its latest admission (the scheduler sets it).
    """

    prompt_ids: list[int]
    max_new_tokens: int
    sampling: SamplingParams
    text: TextStream
    emit: Callable[[GenerationDelta | ServiceError], None]
    generator: np.random.Generator
    matcher: Any = None
    counts: np.ndarray | None = None
    top_logprobs: int | None = None
    tenant: Hashable = None
    cache_scope: Hashable = None
    output_ids: list[int] = field(default_factory=list)
    last_token: int = -1
    drafts: list[int] = field(default_factory=list)
    slot: int = -1
    cached_tokens: int = 0
    computed: int = 0
    cancelled: bool = False
    finished: bool = False
    arrival: int = 0
    admitted: int = 0

    @property
    def completion_tokens(self) -> int:
        """Tokens generated so far."""
        return len(self.output_ids)
