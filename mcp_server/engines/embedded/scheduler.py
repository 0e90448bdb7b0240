"""Continuous batching: one thread runs the model for every running sequence.

Each step the scheduler drops the sequences whose consumer went away, admits waiting ones
into free slots (fairly between tenants, preempting where :class:`.policy.FairQueue` says),
prefills admitted prompts a chunk at a time within the step's token budget (less the decode
rows' tokens, prompt tokens weighed by position: :func:`.policy.prompt_chunk`), and has the
runner decode one token for all running rows. A preempted sequence keeps its sampling state
and output; readmitted, its prompt and output so far are prefilled again (mostly from the
prefix cache) and it goes on exactly where it was.

Jump-forward (:mod:`.jumpforward`): a row's grammar-forced tokens are fed as drafts after
its token and taken where one-token steps would choose them; a step yields several tokens.
Penalties, grammar masks, sampling and log-probabilities (:mod:`.choice`) and stop strings
are applied here on the runner's float32 logits, the same for every runner (:mod:`.runners`).
Results go back through each sequence's ``emit`` callback, which must be thread-safe.
"""

from __future__ import annotations

import itertools
import logging
import math
import threading
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np

from mcp_server.engines.base import EngineLoad, FinishReason, GenerationDelta, TokenLogprob
from mcp_server.engines.embedded.choice import Chooser
from mcp_server.engines.embedded.jumpforward import StepStats, drafts, fed_depth
from mcp_server.engines.embedded.policy import FairQueue, Limits, chunk_cost, prompt_chunk
from mcp_server.engines.embedded.runners import ModelRunner
from mcp_server.engines.embedded.sequence import Sequence
from mcp_server.errors import EngineUnavailable, ServiceError

__all__ = ["Scheduler", "Sequence"]

logger = logging.getLogger(__name__)

@dataclass
class _Delta:
    """What one row took in one step, sent as one :class:`GenerationDelta`."""

    text: str = ""
    logprobs: list[TokenLogprob] = field(default_factory=list)
    finish: FinishReason | None = None
    failed: bool = False


class Scheduler:
    """Runs a model for many sequences at once on a dedicated thread.

    Args:
        runner: admits, prefills and decodes (:class:`.runners.ModelRunner`); it must hold
            ``max_batch_size`` sequences. Only this thread calls it once started.
        eos_ids: token ids that end a sequence with finish_reason ``stop``.
        max_batch_size: most sequences admitted at once (prefilling or decoding); others wait.
        vocab: each token id's raw bytes (the grammar backend's ``vocab``), for
            log-probability entries; ids beyond it read as ``b""``.
        limits: the step's token budget and the per-tenant cap (:class:`.policy.Limits`).
        jump_forward: feed grammar-forced tokens as drafts (see the module's docstring);
            only where the runner ``takes_drafts``.
        hand_over: called after each step and at :meth:`stop`, once the step's results went to
            the ``emit`` callbacks (a batching emitter hands them over there:
            :class:`.handoff.Outbox`); None when ``emit`` delivers at once.

    Attributes:
        stats: :class:`StepStats`.
    """

    def __init__(
        self,
        runner: ModelRunner,
        eos_ids: Iterable[int],
        max_batch_size: int,
        vocab: list[bytes] | None = None,
        limits: Limits = Limits(),
        jump_forward: bool = True,
        hand_over: Callable[[], None] | None = None,
    ):
        self._runner = runner
        self._jump_forward = jump_forward and runner.takes_drafts
        self.stats = StepStats()
        self._hand_over = hand_over or (lambda: None)
        self._chooser = Chooser(vocab or [], runner.vocab_size)
        self._eos = frozenset(eos_ids)
        self._max_batch_size = max_batch_size
        self._step_tokens = limits.step_tokens
        self._pending: deque[Sequence] = deque()  # submitted, not yet seen by the thread
        self._wakeup = threading.Condition()
        self._stopping = False
        self._unfinished = 0
        self._arrivals = itertools.count()
        self._admissions = itertools.count()
        self._queue = FairQueue(limits.per_tenant, limits.preempt)  # waiting: seen by the thread, no slot
        self._prefilling: list[Sequence] = []  # a slot, prompt not all computed
        self._rows: list[Sequence] = []  # decoding
        self._flushes: list[tuple[threading.Event, list[bool]]] = []  # (done, [flushed]) per caller
        self._thread = threading.Thread(target=self._run, name="chatcap-scheduler", daemon=True)

    @property
    def running(self) -> int:
        """Sequences submitted and not yet finished or dropped.

        A sequence stops counting just before its last delta is sent, and a cancelled
        one when it leaves the batch.
        """
        return self._unfinished

    def load(self) -> EngineLoad:
        """The sequences submitted and not finished, the waiting ones, and the tokens they hold."""
        with self._wakeup:
            waiting = [*self._pending, *self._queue.waiting]
            running = [*self._rows, *self._prefilling]
            unfinished = self._unfinished
        tokens = sum(len(s.prompt_ids) + s.completion_tokens for s in (*running, *waiting) if not s.finished)
        return EngineLoad(unfinished, len(waiting), tokens)

    def flush_cache(self, timeout: float = 10.0) -> bool:
        """Drop every cached prompt prefix, as SGLang's ``/flush_cache``: only while idle.

        Blocks until the scheduler thread has done it (call it off the event loop).

        Returns:
            True when the cache was flushed; False when sequences are running or waiting
            (nothing is dropped), or the thread did not get to it within ``timeout`` seconds.
        """
        done, flushed = threading.Event(), [False]
        with self._wakeup:
            if self._unfinished or self._stopping:
                return False
            self._flushes.append((done, flushed))
            self._wakeup.notify()
        return done.wait(timeout) and flushed[0]

    def start(self) -> None:
        """Start the scheduler thread."""
        self._thread.start()

    def submit(self, sequence: Sequence) -> None:
        """Queue a sequence; it is considered for a slot at the next step.

        Raises:
            EngineUnavailable: the scheduler is stopping.
        """
        with self._wakeup:
            if self._stopping:
                raise EngineUnavailable("The engine is shutting down.")
            sequence.arrival = next(self._arrivals)
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
        self._fail([*self._rows, *self._prefilling, *self._queue.waiting, *self._pending], error)
        self._hand_over()
        self._rows, self._prefilling = [], []
        self._pending.clear()
        self._queue.clear()
        self._runner.clear()

    def _run(self) -> None:
        while self._wait_for_work():
            self._drop_cancelled()
            self._admit()
            self._prefill()
            try:
                self._decode()
            except Exception:
                logger.exception("Decode step failed for %d sequences", len(self._rows))
                self._fail(self._rows, EngineUnavailable("The model failed while generating."))
                for sequence in [*self._rows, *self._prefilling]:
                    self._queue.leave(sequence)
                self._queue.waiting.extend(self._prefilling)  # their cells go with the clear: prefill again
                self._rows, self._prefilling = [], []
                self._runner.clear()
            self._hand_over()

    def _wait_for_work(self) -> bool:
        """Block until there is something to do and take in the new sequences; False to stop."""
        with self._wakeup:
            while not (self._stopping or self._busy() or self._flushes):
                self._wakeup.wait()
            if self._flushes:
                if idle := not self._busy():
                    self._runner.clear()
                for done, flushed in self._flushes:
                    flushed[0] = idle
                    done.set()
                self._flushes.clear()
            self._queue.waiting.extend(self._pending)
            self._pending.clear()
            return not self._stopping

    def _busy(self) -> bool:
        """Whether any sequence is waiting, prefilling or decoding (call with the lock held)."""
        return bool(self._rows or self._prefilling or self._queue.waiting or self._pending)

    def _drop_cancelled(self) -> None:
        """Retire the waiting and prefilling sequences nobody listens to (rows leave in :meth:`_decode`)."""
        for sequence in [s for s in self._queue.waiting if s.cancelled]:
            self._queue.waiting.remove(sequence)
            self._retire(sequence)
        for sequence in [s for s in self._prefilling if s.cancelled]:
            self._leave(sequence)
            self._retire(sequence)

    def _admit(self) -> None:
        """Give free slots to waiting sequences, fairest first, preempting where the queue says."""
        queue = self._queue
        while (sequence := queue.next()) is not None:
            if len(self._rows) + len(self._prefilling) >= self._max_batch_size:
                victim = queue.victim(sequence, [*self._rows, *self._prefilling])
                if victim is None:
                    return
                logger.info("Preempting a sequence of a tenant running %d so that another gets a slot",
                            queue.running(victim.tenant))
                self._leave(victim)
                queue.waiting.append(victim)
            queue.waiting.remove(sequence)
            try:
                sequence.slot, cached = self._runner.admit(sequence.prompt_ids + sequence.output_ids,
                                                           sequence.cache_scope)
            except Exception:
                logger.exception("Admitting a %d-token prompt failed", len(sequence.prompt_ids))
                self._fail([sequence], EngineUnavailable("The model failed while reading the prompt."))
                continue
            if not sequence.output_ids:
                sequence.cached_tokens = cached
            sequence.computed = cached
            sequence.admitted = next(self._admissions)
            queue.admit(sequence)
            self._prefilling.append(sequence)

    def _leave(self, sequence: Sequence) -> None:
        """Take an admitted sequence out of the batch and release its slot (its cells stay cached)."""
        if sequence in self._rows:
            self._rows.remove(sequence)
        else:
            self._prefilling.remove(sequence)
        self._runner.release(sequence.slot)
        sequence.slot = -1
        sequence.drafts = []  # never fed; a readmitted sequence drafts again after its next token
        self._queue.leave(sequence)

    def _prefill(self) -> None:
        """Compute prompt chunks, oldest admission first, within what the step's budget leaves
        after the decode rows; a prompt that is complete gets its next token and becomes a row."""
        decoding = sum(1 + len(seq.drafts) for seq in self._rows)
        budget = math.inf if self._step_tokens is None else max(1, self._step_tokens - decoding)
        span, first = self._runner.attention_span, True
        for sequence in list(self._prefilling):
            position = sequence.computed
            chunk = self._runner.context_length if math.isinf(budget) else prompt_chunk(budget, position, span, first)
            if chunk == 0:
                return
            first = False
            try:
                computed, logits = self._runner.prefill(sequence.slot, chunk)
                sequence.computed += computed
                budget -= chunk_cost(computed, position, span)
                if logits is None:
                    continue
                self._prefilling.remove(sequence)
                self._rows.append(sequence)
                finished = self._take([sequence], logits[None])
            except Exception:
                logger.exception("Prefill of a %d-token prompt failed", len(sequence.prompt_ids))
                self._leave(sequence)
                self._fail([sequence], EngineUnavailable("The model failed while reading the prompt."))
                continue
            if finished[0]:
                self._leave(sequence)

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
        depth = fed_depth([len(seq.drafts) for seq in self._rows])
        for seq in self._rows:
            seq.drafts = seq.drafts[:depth]  # the rest are drafted again after this step
        logits = self._runner.decode([seq.slot for seq in self._rows], [seq.last_token for seq in self._rows],
                                     [seq.drafts for seq in self._rows] if depth else None)  # fmt: skip
        self.stats.decode_steps += 1
        self.stats.drafted_tokens += depth * len(self._rows)
        finished = self._take(self._rows, logits)
        self._keep([i for i, done in enumerate(finished) if not done])

    def _take(self, rows: list[Sequence], logits: np.ndarray) -> list[bool]:
        """Choose each row's tokens from ``logits`` (``[sum(1 + len(drafts)), V]``, the runner's
        layout), send each row one delta, draft again; return which rows finished.

        Position ``k`` of every row still going is chosen together (:class:`.choice.Chooser`);
        a row goes on to ``k + 1`` while the token chosen is its ``k``-th draft.
        """
        starts = list(itertools.accumulate((1 + len(seq.drafts) for seq in rows), initial=0))
        deltas = [_Delta() for _ in rows]
        finished = [False] * len(rows)
        going, k = list(range(len(rows))), 0
        while going:
            at = logits if len(going) == len(logits) else logits[[starts[i] + k for i in going]]
            tokens, entries = self._chooser.choose([rows[i] for i in going], at)
            still = []
            for i, token, entry in zip(going, tokens, entries, strict=True):
                sequence, drafts = rows[i], rows[i].drafts
                finished[i] = self._advance(sequence, token, entry, deltas[i])
                taken = k < len(drafts) and token == drafts[k]
                self.stats.accepted_drafts += taken
                if taken and not finished[i]:
                    still.append(i)
                elif not finished[i] and k < len(drafts):
                    self._runner.rollback(sequence.slot, len(drafts) - k)
            going, k = still, k + 1
        for sequence, delta, done in zip(rows, deltas, finished, strict=True):
            if not delta.failed and (delta.text or delta.finish or delta.logprobs):
                self._send(sequence, GenerationDelta(
                    delta.text, len(sequence.prompt_ids), sequence.completion_tokens, delta.finish,
                    logprobs=tuple(delta.logprobs), cached_tokens=sequence.cached_tokens,
                ))  # fmt: skip
            sequence.drafts = [] if done else self._draft(sequence)
        return finished

    def _draft(self, sequence: Sequence) -> list[int]:
        """``sequence``'s drafts (:func:`.jumpforward.drafts`; :func:`.jumpforward.fed_depth` may cut them); [] when off."""
        return drafts(sequence, self._runner.context_length) if self._jump_forward else []

    def _keep(self, rows: list[int]) -> None:
        """Keep only ``rows`` (indices into the running rows); release the others' caches."""
        kept = set(rows)
        for sequence in [seq for i, seq in enumerate(self._rows) if i not in kept]:
            self._leave(sequence)

    def _advance(self, sequence: Sequence, token: int, entry: TokenLogprob | None, delta: _Delta) -> bool:
        """Record ``token`` for ``sequence``, adding its text, log-probability ``entry`` and
        finish to ``delta``; return True when it is finished (or failed: ``delta.failed``).

        A delta goes out when there is text, a finish, or a log-probability entry
        (whose token's text may be held back, or never shown).
        """
        sequence.output_ids.append(token)
        sequence.last_token = token
        if sequence.counts is not None:
            sequence.counts[token] += 1
        if sequence.matcher is not None and not sequence.matcher.accept(token):
            logger.error("The grammar rejected token %d it had allowed", token)
            self._fail([sequence], ServiceError("Constrained decoding produced a token its grammar rejects."))
            delta.failed = True
            return True
        if entry:
            delta.logprobs.append(entry)
        if token in self._eos or (sequence.matcher is not None and sequence.matcher.is_terminated()):
            delta.text, delta.finish = delta.text + sequence.text.flush(), "stop"
        else:
            delta.text += sequence.text.push(token)
            if sequence.text.stopped:
                delta.finish = "stop"
            elif sequence.completion_tokens >= sequence.max_new_tokens:
                delta.text, delta.finish = delta.text + sequence.text.flush(), "length"
        if delta.finish:
            self._retire(sequence)
        return delta.finish is not None

    def _fail(self, sequences: Iterable[Sequence], error: ServiceError) -> None:
        for sequence in list(sequences):
            self._retire(sequence)
            self._send(sequence, error)

    def _retire(self, sequence: Sequence) -> None:
        """Stop counting ``sequence`` as running (once)."""
        with self._wakeup:
            if not sequence.finished:
                sequence.finished = True
                self._unfinished -= 1

    @staticmethod
    def _send(sequence: Sequence, item: GenerationDelta | ServiceError) -> None:  # thread-safe emit
        try:
            sequence.emit(item)
        except RuntimeError:  # the consumer's event loop is closed: nobody is listening
            sequence.cancelled = True
