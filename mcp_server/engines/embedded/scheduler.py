"""Continuous batching: one thread runs the model for every running sequence.

Each round the scheduler admits waiting sequences (the runner prefills each alone),
drops the ones whose consumer went away, and has the runner decode one token for all
running rows in one step. Penalties, grammar masks, sampling, log-probabilities and stop
strings are applied here on the runner's float32 logits, the same for every runner
(:mod:`.runners`). Results go back through each sequence's ``emit`` callback, which
must be thread-safe.
"""

from __future__ import annotations

import logging
import math
import threading
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from mcp_server.engines.base import (
    FinishReason,
    GenerationDelta,
    SamplingParams,
    TokenLogprob,
)
from mcp_server.engines.embedded.decoding.backends import allocate_bitmask, fill_masks
from mcp_server.engines.embedded.runners import ModelRunner
from mcp_server.engines.embedded.sampling import (
    apply_bitmask,
    apply_penalties,
    draw_uniforms,
    sample,
    token_logprobs,
)
from mcp_server.engines.embedded.textstream import TextStream
from mcp_server.errors import EngineUnavailable, ServiceError

__all__ = ["Scheduler", "Sequence"]

logger = logging.getLogger(__name__)


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
        generator: this sequence's random source (:func:`.sampling.new_generator`).
        matcher: a :class:`.decoding.backends.GrammarMatcher` constraining the output, or None.
        counts: float32 ``[V]`` generated-token counts when a penalty is set, else None.
        top_logprobs: when the request asked for ``logprobs``, how many alternatives
            (0..20) to report with each token's log-probability; None when it did not.
        completion_tokens: tokens generated so far.
        last_token: the most recent token, fed to the next decode step.
        slot: the runner's handle for this sequence's cache, -1 before prefill.
        cached_tokens: leading prompt tokens the runner's prefix cache held (not computed).
        cancelled: set by the consumer when it stops listening.
        finished: set by the scheduler once the sequence no longer counts as running.
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
    completion_tokens: int = 0
    last_token: int = -1
    slot: int = -1
    cached_tokens: int = 0
    cancelled: bool = False
    finished: bool = False


class Scheduler:
    """Runs a model for many sequences at once on a dedicated thread.

    Args:
        runner: prefills and decodes (:class:`.runners.ModelRunner`); it must hold
            ``max_batch_size`` sequences. Only this thread calls it once started.
        eos_ids: token ids that end a sequence with finish_reason ``stop``.
        max_batch_size: most sequences decoded together; others wait their turn.
        vocab: each token id's raw bytes (the grammar backend's ``vocab``), for
            log-probability entries; ids beyond it read as ``b""``.
    """

    def __init__(
        self, runner: ModelRunner, eos_ids: Iterable[int], max_batch_size: int, vocab: list[bytes] | None = None
    ):
        self._runner = runner
        self._vocab = vocab or []
        self._eos = frozenset(eos_ids)
        self._max_batch_size = max_batch_size
        self._vocab_size = runner.vocab_size
        self._pending: deque[Sequence] = deque()
        self._wakeup = threading.Condition()
        self._stopping = False
        self._unfinished = 0
        self._rows: list[Sequence] = []
        self._thread = threading.Thread(target=self._run, name="chatcap-scheduler", daemon=True)

    @property
    def running(self) -> int:
        """Sequences submitted and not yet finished or dropped.

        A sequence stops counting just before its last delta is sent, and a cancelled
        one when it leaves the batch.
        """
        return self._unfinished

    def start(self) -> None:
        """Start the scheduler thread."""
        self._thread.start()

    def submit(self, sequence: Sequence) -> None:
        """Queue a sequence; it joins the batch at the next round.

        Raises:
            EngineUnavailable: the scheduler is stopping.
        """
        with self._wakeup:
            if self._stopping:
                raise EngineUnavailable("The engine is shutting down.")
            self._pending.append(sequence)
            self._unfinished += 1
            self._wakeup.notify()

    def stop(self) -> None:
        """Stop the thread (blocking until it ends) and fail every unfinished sequence."""
        with self._wakeup:
            self._stopping = True
            self._wakeup.notify()
        if self._thread.is_alive():
            self._thread.join()
        error = EngineUnavailable("The engine shut down before the sequence finished.")
        self._fail([*self._rows, *self._pending], error)
        self._rows.clear()
        self._pending.clear()
        self._runner.clear()

    def _run(self) -> None:
        while (admitted := self._wait_for_work()) is not None:
            for sequence in admitted:
                self._admit(sequence)
            try:
                self._decode()
            except Exception:
                logger.exception("Decode step failed for %d sequences", len(self._rows))
                self._fail(self._rows, EngineUnavailable("The model failed while generating."))
                self._rows = []
                self._runner.clear()

    def _wait_for_work(self) -> list[Sequence] | None:
        """Block until there is something to do; return the sequences to admit, None to stop."""
        with self._wakeup:
            while not (self._stopping or self._rows or self._pending):
                self._wakeup.wait()
            if self._stopping:
                return None
            free = self._max_batch_size - len(self._rows)
            return [self._pending.popleft() for _ in range(min(free, len(self._pending)))]

    def _admit(self, sequence: Sequence) -> None:
        """Prefill one sequence alone, pick its first token, and add it to the batch."""
        if sequence.cancelled:
            self._retire(sequence)
            return
        try:
            sequence.slot, sequence.cached_tokens, logits = self._runner.prefill(sequence.prompt_ids)
            tokens, entries = self._choose([sequence], logits[None])
            done = self._advance(sequence, tokens[0], entries[0])
        except Exception:
            logger.exception("Prefill of a %d-token prompt failed", len(sequence.prompt_ids))
            if sequence.slot >= 0:
                self._runner.release(sequence.slot)
            self._fail([sequence], EngineUnavailable("The model failed while reading the prompt."))
            return
        if done:
            self._runner.release(sequence.slot)
        else:
            self._rows.append(sequence)

    def _decode(self) -> None:
        """Decode one token for every running row, then drop the rows that finished.

        An exception here fails every running row; :meth:`_run` catches it and goes on.
        """
        listened = []
        for i, seq in enumerate(self._rows):
            if seq.cancelled:
                self._retire(seq)
            else:
                listened.append(i)
        self._keep(listened)
        if not self._rows:
            return
        logits = self._runner.decode([seq.slot for seq in self._rows], [seq.last_token for seq in self._rows])
        tokens, entries = self._choose(self._rows, logits)
        finished = [self._advance(*row) for row in zip(self._rows, tokens, entries, strict=True)]
        self._keep([i for i, done in enumerate(finished) if not done])

    def _keep(self, rows: list[int]) -> None:
        """Keep only ``rows`` (indices into the running rows); release the others' caches."""
        if len(rows) < len(self._rows):
            kept = set(rows)
            for i, seq in enumerate(self._rows):
                if i not in kept:
                    self._runner.release(seq.slot)
            self._rows = [self._rows[i] for i in rows]

    def _choose(self, rows: list[Sequence], logits: np.ndarray) -> tuple[list[int], list[TokenLogprob | None]]:
        """Apply penalties and grammars to ``logits`` (``[B, V]``, in place) and pick tokens.

        Returns:
            The token of each row, and its log-probability entry (:meth:`_logprobs`) for
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
            if len(constrained) == len(rows):
                apply_bitmask(logits, bitmask)
            else:
                subset = logits[constrained]
                apply_bitmask(subset, bitmask)
                logits[constrained] = subset
        params = [seq.sampling for seq in rows]
        sampled = [seq.generator for seq in rows if seq.sampling.temperature > 0]
        uniforms = np.zeros(len(rows))
        if sampled:
            uniforms[[i for i, p in enumerate(params) if p.temperature > 0]] = draw_uniforms(sampled)
        tokens = sample(logits, params, uniforms)
        return tokens.tolist(), self._logprobs(rows, logits, tokens)

    def _logprobs(self, rows: list[Sequence], logits: np.ndarray, tokens: np.ndarray) -> list[TokenLogprob | None]:
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
        raw = self._vocab[token] if token < len(self._vocab) else b""
        return TokenLogprob(raw.decode("utf-8", errors="replace"), logprob, raw)

    def _advance(self, sequence: Sequence, token: int, entry: TokenLogprob | None = None) -> bool:
        """Record ``token`` for ``sequence`` and send its delta; return True when it is finished.

        A delta goes out when there is text, a finish, or a log-probability ``entry``
        (whose token's text may be held back, or never shown).
        """
        sequence.completion_tokens += 1
        sequence.last_token = token
        if sequence.counts is not None:
            sequence.counts[token] += 1
        if sequence.matcher is not None and not sequence.matcher.accept(token):
            logger.error("The grammar rejected token %d it had allowed", token)
            self._fail([sequence], ServiceError("Constrained decoding produced a token its grammar rejects."))
            return True
        finish: FinishReason | None = None
        if token in self._eos or (sequence.matcher is not None and sequence.matcher.is_terminated()):
            text, finish = sequence.text.flush(), "stop"
        else:
            text = sequence.text.push(token)
            if sequence.text.stopped:
                finish = "stop"
            elif sequence.completion_tokens >= sequence.max_new_tokens:
                text, finish = text + sequence.text.flush(), "length"
        if finish:
            self._retire(sequence)
        if text or finish or entry:
            logprobs = (entry,) if entry else ()
            delta = GenerationDelta(
                text,
                len(sequence.prompt_ids),
                sequence.completion_tokens,
                finish,
                logprobs=logprobs,
                cached_tokens=sequence.cached_tokens,
            )
            self._send(sequence, delta)
        return finish is not None

    def _fail(self, sequences: Iterable[Sequence], error: ServiceError) -> None:
        for sequence in sequences:
            self._retire(sequence)
            self._send(sequence, error)

    def _retire(self, sequence: Sequence) -> None:
        """Stop counting ``sequence`` as running (once)."""
        with self._wakeup:
            if not sequence.finished:
                sequence.finished = True
                self._unfinished -= 1

    @staticmethod
    def _send(sequence: Sequence, item: GenerationDelta | ServiceError) -> None:
        try:
            sequence.emit(item)
        except RuntimeError:  # the consumer's event loop is closed: nobody is listening
            sequence.cancelled = True
