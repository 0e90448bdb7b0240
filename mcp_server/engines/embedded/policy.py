"""The scheduler's policies: how many tokens a step computes, which waiting sequence gets
the next slot, which one gives its slot up, and which prompts may share cached prefixes.

* **Step budget** (``--chunked-prefill-size``, SGLang's flag): a step computes at most this
  many tokens, one per decode row plus prompt chunks, as llama-server and SGLang mix prompt
  chunks into decode steps (chunked prefill); a running stream then waits at most one chunk
  for another's prompt, however long. Prompt tokens are weighed by their position
  (:func:`prompt_chunk`), since attention makes a late token cost several early ones: a
  chunk far into a long prompt is shorter, and the stream's wait stays about one
  short-context chunk.
* **Fair admission** (:class:`FairQueue`): a *tenant* is who sent the request (an API key,
  or the client address without one); every choice of a request (``n``) is one of its
  sequences. A free slot goes to the waiting sequence whose tenant has the fewest admitted,
  the oldest among equals, under a per-tenant cap (``--max-running-requests-per-key``).
  With no slot free, a tenant running at least two more than a waiting one gives up its
  most recently admitted sequence (recompute preemption, as vLLM's).
* **Prefix-cache scope** (:func:`cache_scope`): a tenant's own, or a ``cache_salt``
  shared by those who send it (vLLM's request field).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any

from mcp_server.engines.base import GenerationRequest
from mcp_server.errors import InvalidRequest

__all__ = [
    "DEFAULT_CHUNKED_PREFILL_SIZE", "MIN_PROMPT_CHUNK", "FairQueue", "Limits", "cache_scope", "chunk_cost", "prompt_chunk",
]

DEFAULT_CHUNKED_PREFILL_SIZE = 64
"""Tokens a step computes when ``--chunked-prefill-size`` is not given. Near the start of a
prompt a token costs about the same CPU time in chunks of 16 to 512 tokens (measured:
4.0-4.5 ms each on a busy AMX core), so the budget only trades a running stream's gap (one
chunk: about 0.1-0.2 s on an AMX core) against how fast a long prompt advances beside many
decode rows; later tokens are weighed by :func:`prompt_chunk`."""


def chunk_cost(tokens: int, position: int, attention_span: int | None) -> float:
    """What computing prompt tokens ``position .. position + tokens - 1`` costs, in tokens at
    position 0: each token ``p`` weighs ``1 + p / attention_span`` (its attention reads the
    ``p`` cached tokens before it; :attr:`.runners.ModelRunner.attention_span`), or 1 when
    ``attention_span`` is None."""
    if attention_span is None:
        return float(tokens)
    return tokens + (tokens * position + tokens * (tokens - 1) / 2) / attention_span


MIN_PROMPT_CHUNK = 8
"""Fewest prompt tokens worth one ``llama_decode`` call: a call's fixed cost is about that
of a few tokens in a chunk (measured on a busy AMX core: 17 ms for one token at position 0,
against 3.1-3.5 ms a token in chunks of 16 and 64)."""


def prompt_chunk(budget: float, position: int, attention_span: int | None, first: bool) -> int:
    """How many prompt tokens from ``position`` to compute in a step with ``budget`` (a finite
    number of tokens, less than 0 when a forced chunk overspent it) left: the most whose :func:`chunk_cost` fits, when that is at least
    :data:`MIN_PROMPT_CHUNK`; else :data:`MIN_PROMPT_CHUNK` for the step's ``first`` chunk,
    so that prompts always advance, and 0 (wait for the next step) for a later one.

    Example: with a budget of 63 and an attention span of 256, a chunk holds 55 tokens at
    position 0 and 8 at position 1,900, whose attention over 1,900 cached tokens makes each
    cost about 8 early ones.
    """
    if budget <= 0:
        n = 0
    elif attention_span is None:
        n = int(budget)
    else:  # n + (n * position + n * (n - 1) / 2) / span <= budget: below the positive root
        a, b = 0.5 / attention_span, 1 + (position - 0.5) / attention_span
        n = max(0, int((-b + math.sqrt(b * b + 4 * a * budget)) / (2 * a)))
        while n > 0 and chunk_cost(n, position, attention_span) > budget:  # float rounding at the root
            n -= 1
    if n >= MIN_PROMPT_CHUNK:
        return n
    return MIN_PROMPT_CHUNK if first else 0


@dataclass(frozen=True)
class Limits:
    """What the scheduler's policies are given (see the module's docstring).

    Attributes:
        step_tokens: tokens one step computes, decode rows and prompt chunks together;
            None: prompts are prefilled whole in the step that admits them.
        per_tenant: most sequences one tenant may have admitted; None: no cap.
        preempt: a tenant running more may be preempted for a waiting one. Only where a
            sequence computed again gives the logits it had: llama.cpp over its q8_0 cache,
            where a prompt row equals the decode row (tested). Over f16 a row's attention
            depends on the rows computed with it, and the torch runner computes a batch of
            prompt rows with other kernels than one decode row: there a resumed answer
            could change, so they never preempt.
    """

    step_tokens: int | None = None
    per_tenant: int | None = None
    preempt: bool = True

    @classmethod
    def resolve(
        cls, chunked_prefill_size: int | None, per_tenant: int | None, max_batch_size: int, preempt: bool = True
    ) -> Limits:
        """The limits for ``--chunked-prefill-size`` and ``--max-running-requests-per-key``.

        Args:
            chunked_prefill_size: None: :data:`DEFAULT_CHUNKED_PREFILL_SIZE` (at least twice
                ``max_batch_size``); -1: prompts are prefilled whole.
            per_tenant: the cap, None for none.
            max_batch_size: ``--max-running-requests``.
            preempt: see the attribute.

        Raises:
            InvalidRequest: ``chunked_prefill_size`` neither -1 nor above ``max_batch_size``
                (a full batch of decode rows would leave prompts no room; param
                ``chunked_prefill_size``), or ``per_tenant`` below 1 (param
                ``max_running_requests_per_key``).
        """
        if per_tenant is not None and per_tenant < 1:
            raise InvalidRequest("max_running_requests_per_key must be at least 1.", param="max_running_requests_per_key")
        if chunked_prefill_size is None:
            return cls(max(DEFAULT_CHUNKED_PREFILL_SIZE, 2 * max_batch_size), per_tenant, preempt)
        if chunked_prefill_size == -1:
            return cls(None, per_tenant, preempt)
        if chunked_prefill_size <= max_batch_size:
            raise InvalidRequest(
                f"chunked_prefill_size is {chunked_prefill_size}: a step's budget must exceed "
                f"--max-running-requests ({max_batch_size}) so that prompts advance beside a full batch of "
                "decode rows, or be -1 (no chunking).",
                param="chunked_prefill_size",
            )
        return cls(chunked_prefill_size, per_tenant, preempt)


def cache_scope(request: GenerationRequest) -> tuple[str, str | None]:
    """The prefix-cache scope of a request: its ``cache_salt`` when it sends one (shared by
    everyone who sends that salt), else its tenant, so that no tenant's ``cached_tokens``
    or time to first token reflects another tenant's prompt."""
    if request.cache_salt is not None:
        return "salt", request.cache_salt
    return "tenant", request.tenant


class FairQueue:
    """The waiting sequences, and how many each tenant has admitted (prefilling or decoding).

    Sequences are the scheduler's (``.tenant``, ``.arrival``: submission order,
    ``.admitted``: order of the latest admission); only the scheduler thread calls this.

    Args:
        cap: most sequences one tenant may have admitted; None: no cap.
        preempt: :meth:`victim` may name one (else it never does).

    Attributes:
        waiting: sequences without a slot, in no particular order.
    """

    def __init__(self, cap: int | None = None, preempt: bool = True):
        self.cap = cap
        self.preempt = preempt
        self.waiting: list[Any] = []
        self._admitted: Counter[Hashable] = Counter()

    def running(self, tenant: Hashable) -> int:
        """How many sequences ``tenant`` has admitted."""
        return self._admitted[tenant]

    def next(self) -> Any | None:
        """The waiting sequence whose tenant has the fewest admitted (the oldest among equals),
        of the tenants under the cap; None when there is none."""
        cap = self.cap
        candidates = [s for s in self.waiting if cap is None or self._admitted[s.tenant] < cap]
        return min(candidates, key=lambda s: (self._admitted[s.tenant], s.arrival), default=None)

    def victim(self, waiting: Any, admitted: list[Any]) -> Any | None:
        """The sequence of ``admitted`` to preempt so that ``waiting`` gets a slot: the most
        recently admitted one of the tenant with the most, when that tenant has at least two
        more than ``waiting``'s (the shares come closer and never swap back); else None."""
        heaviest = max(admitted, key=lambda s: (self._admitted[s.tenant], s.admitted), default=None)
        if not self.preempt or heaviest is None or self._admitted[heaviest.tenant] < self._admitted[waiting.tenant] + 2:
            return None
        return max((s for s in admitted if s.tenant == heaviest.tenant), key=lambda s: s.admitted)

    def admit(self, sequence: Any) -> None:
        """Count ``sequence`` as admitted for its tenant."""
        self._admitted[sequence.tenant] += 1

    def leave(self, sequence: Any) -> None:
        """Stop counting an admitted ``sequence``."""
        self._admitted[sequence.tenant] -= 1
        if not self._admitted[sequence.tenant]:
            del self._admitted[sequence.tenant]

    def clear(self) -> None:
        """Forget every waiting sequence and every count."""
        self.waiting.clear()
        self._admitted.clear()
