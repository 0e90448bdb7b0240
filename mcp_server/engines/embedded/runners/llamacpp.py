"""The llama.cpp runner: quantized GGUF compute through llama-cpp-python's low-level API.

One ``llama_context`` serves every running sequence, each with its own sequence id and KV
cache stream (``kv_unified = false``); a decode step is one ``llama_batch`` holding one
token per running sequence. A row's attention never sees another row's cache layout and
llama.cpp's CPU kernels compute the weights' dot products per row, so a sequence's logits
do not depend on what else is in the batch: batched greedy output equals unbatched output
(``tests/test_engine.py``). The unified cache breaks that (llama.cpp issue 24962).

llama.cpp computes a step's rows in one graph only when their sequence ids form one
increasing run (``llama_batch_allocr::split_equal``): rows for ids {0, 2, 4, 6} take as
long as three separate steps, and so do rows in a shuffled order (measured: 4 rows, 34 ms
as {0, 1, 2, 3}, 62 ms as {3, 2, 1, 0} or {0, 2, 4, 6}). So the runner hands the scheduler
stable handles and keeps the running sequences on ids ``0 .. n-1``, in id order: before a
step, the highest running sequence moves into the lowest free id until there is no gap
(a copy of its cells in use, :func:`.kv_pages.copy_sequence`: ~0.5 ms for 50 tokens).

Prefix cache: every id keeps its keys and values after its sequence ends, and remembers
the tokens they were computed from. A new prompt starts from the id, running or not, whose
tokens share the longest prefix with it: the prefix is copied (or kept, when it is already
in place) and only the rest is computed, as ``llama-server``'s slots do with
``cache_prompt`` and SGLang's RadixAttention and vLLM's automatic prefix caching do with
blocks. The chat template's system prompt, tool definitions and earlier turns are then
computed once instead of once per request (prefill costs ~5 ms per token on one core).
Copies are exact and rows are computed independently, so a reused prefix gives the logits
a fresh computation gives (tested). A prompt reuses only cells computed for its own scope
(the scheduler's tenant or ``cache_salt``). Chunked prefill: :meth:`LlamaCppRunner.admit`
places a prompt and its cached prefix, :meth:`LlamaCppRunner.prefill` computes the rest a
chunk (one ``llama_decode``) at a time, the scheduler decoding the others in between.

Memory is allocated once, when the context is created: the KV cache holds
``context_length * max_batch_size`` tokens (at q8_0 about 12 KB per token for
SmolLM2-135M: 30 layers x 2 x 3 KV heads x 64 values at 34 bytes per 32), resident only as
sequences write into it (:mod:`.kv_pages`), and the compute buffer grows with ``n_ubatch``
(128 here: ~25 MB, against ~98 MB at llama.cpp's default 512).

On CPUs with AMX the weights are repacked for its tile units (:mod:`.repack`): a step
costs about a third of the plain kernels' at any batch size.

Tokenization stays with the Hugging Face tokenizer (the chat template's ids are fed to
llama.cpp as they are), so prompts, detokenization and xgrammar's vocabulary are the
same for both runners.
"""

from __future__ import annotations

import ctypes
import itertools
import logging
from collections.abc import Hashable
from pathlib import Path
from typing import Any

import numpy as np

from mcp_server.engines.embedded.model_files import cache_root
from mcp_server.engines.embedded.progress import Progress
from mcp_server.engines.embedded.runners.kv_pages import clear_cache, copy_sequence, released_kv_pages
from mcp_server.engines.embedded.runners.llama_log import captured_log, failure_reason, quiet_llama_log
from mcp_server.engines.embedded.runners.llamacpp_defaults import (
    ATTENTION_SPANS, DEFAULT_CONTEXT_LENGTH, DEFAULT_KV_CACHE_DTYPE, DEFAULT_MAX_BATCH_SIZE, KV_CACHE_DTYPES,
    MIN_COPIED_PREFIX, N_UBATCH,
)
from mcp_server.engines.embedded.runners.repack import one_openmp_thread, resolve_repack

__all__ = ["DEFAULT_CONTEXT_LENGTH", "DEFAULT_KV_CACHE_DTYPE", "DEFAULT_MAX_BATCH_SIZE", "KV_CACHE_DTYPES", "LlamaCppRunner"]

logger = logging.getLogger(__name__)


class LlamaCppRunner:
    """Runs a GGUF model in llama.cpp for up to ``max_batch_size`` sequences at once.

    Args:
        gguf_path: the GGUF file.
        max_batch_size: sequences held at once (llama.cpp's ``n_seq_max``).
        context_length: tokens per sequence (llama.cpp's ``n_ctx_seq``); None =
            :data:`DEFAULT_CONTEXT_LENGTH`, capped at the model's training context.
        threads: llama.cpp compute threads, for prefill and decode alike.
        prefix_cache: reuse cached prompt prefixes (see the module's docstring); False
            computes every prompt in full. Ignored (off) with an f16 cache.
        kv_cache_dtype: one of :data:`KV_CACHE_DTYPES`; q8_0 runs with flash attention
            (llama.cpp needs it for a quantized V cache), f16 with llama.cpp's default
            and no prefix cache: over an f16 cache a prompt row's logits depend on how
            many rows its prefill holds (ggml's CPU flash attention switches to a tiled
            kernel for f32/f16 caches from a tile's worth of query rows, and without flash
            attention the matrix products change kernels too), so a reused prefix would
            change answers (measured: up to 0.59 on a 120-token prompt's logits; tested).
            Over a q8_0 cache every query row takes the same per-row kernel.
        repack: weight repacking for the CPU's matrix units, one of
            :data:`.repack.REPACK_MODES` (:func:`.repack.resolve_repack`).
        cache_dir: where the repacking probe's answers are kept; None = :func:`.model_files.cache_root`.

    Attributes:
        vocab_size: logits per row.
        context_length: tokens per sequence, as llama.cpp sized it.
        eos_ids: the GGUF's end-of-sequence and end-of-turn tokens.
        repacked: the weights were loaded into llama.cpp's repacked (AMX) buffers.
        backend, attention_span: ``llamacpp-<amx|cpu>-<KV cache type>``, and that type's
            :data:`.llamacpp_defaults.ATTENTION_SPANS` (see :class:`.ModelRunner`).
        takes_drafts: True: :meth:`decode` takes drafted tokens, :meth:`rollback` drops them.

    Raises:
        RuntimeError: llama-cpp-python is missing, or llama.cpp cannot load the file
            or create the context.
    """

    takes_drafts = True

    def __init__(
        self,
        gguf_path: Path,
        max_batch_size: int,
        context_length: int | None,
        threads: int,
        prefix_cache: bool = True,
        kv_cache_dtype: str = DEFAULT_KV_CACHE_DTYPE,
        repack: str = "auto",
        cache_dir: Path | None = None,
    ):
        try:
            import llama_cpp.llama_cpp as lib
        except ImportError as exc:
            raise RuntimeError("The llamacpp runner needs llama-cpp-python: pip install llama-cpp-python==0.3.36") from exc
        quiet_llama_log()
        self._lib = lib
        # One OpenMP thread for this thread (llama.cpp's, and torch's when loaded, share one
        # libgomp). The OpenMP regions that repack the weights leave no idle team behind: with one, GNU OpenMP
        # counts more threads than cores and sleeps at each of ggml's per-node barriers (`omp
        # barrier`) in the decoding thread instead of spinning (measured with 2 threads on 2
        # cores: 33 ms a step for one sequence against 3.5 ms).
        one_openmp_thread()
        lib.llama_backend_init()
        model_params = lib.llama_model_default_params()
        self.repacked = resolve_repack(repack, gguf_path, threads, cache_dir or cache_root())
        model_params.use_extra_bufts = self.repacked
        if self.repacked:  # the AMX buffer holds copies: a mapped file would keep all its pages resident
            model_params.load_mode = lib.LLAMA_LOAD_MODE_NONE  # measured: +128 MB of RSS against +205 MB mapped
        with Progress(f"Loading {gguf_path.name} into llama.cpp", total=1.0) as progress:
            # llama.cpp calls back with the fraction loaded; True goes on (ctypes keeps the
            # function alive in model_params while it loads).
            model_params.progress_callback = lib.llama_progress_callback(
                lambda fraction, _: progress.update(fraction) is None
            )
            with captured_log(lib) as log:
                self._model = lib.llama_model_load_from_file(str(gguf_path).encode(), model_params)
        if not self._model:
            raise RuntimeError(f"llama.cpp could not load {gguf_path}{failure_reason(log)}")
        n_ctx_train = lib.llama_model_n_ctx_train(self._model)
        per_sequence = min(context_length or DEFAULT_CONTEXT_LENGTH, n_ctx_train)
        params = lib.llama_context_default_params()
        params.n_ctx = per_sequence * max_batch_size
        params.n_seq_max = max_batch_size
        params.kv_unified = False
        params.n_batch = per_sequence  # a whole prompt in one llama_decode call
        params.n_ubatch = min(N_UBATCH, per_sequence)
        params.n_threads = params.n_threads_batch = threads
        params.no_perf = True
        if kv_cache_dtype == "q8_0":
            params.type_k = params.type_v = lib.GGML_TYPE_Q8_0
            params.flash_attn_type = lib.LLAMA_FLASH_ATTN_TYPE_ENABLED
        with released_kv_pages(lib) as self._kv_released:
            self._ctx = lib.llama_init_from_model(self._model, params)
        if not self._ctx:
            lib.llama_model_free(self._model)
            raise RuntimeError(f"llama.cpp could not create a context of {params.n_ctx} tokens")
        self._memory = lib.llama_get_memory(self._ctx)
        vocab = lib.llama_model_get_vocab(self._model)
        self.vocab_size = lib.llama_vocab_n_tokens(vocab)
        self.context_length = lib.llama_n_ctx_seq(self._ctx)
        self.eos_ids = frozenset(t for t in (lib.llama_vocab_eos(vocab), lib.llama_vocab_eot(vocab)) if t >= 0)
        self._capacity = max(self.context_length, max_batch_size)
        self._batch = lib.llama_batch_init(self._capacity, 0, 1)
        self._tokens: list[list[int]] = [[] for _ in range(max_batch_size)]  # what each id's cells hold
        self._scopes: list[Hashable] = [None] * max_batch_size  # the prefix-cache scope they were computed for
        self._prompts: dict[int, list[int]] = {}  # handle of a sequence still being prefilled -> its prompt
        self._seq_ids: dict[int, int] = {}  # handle of a running sequence -> its llama.cpp sequence id
        self._handles = itertools.count()
        self._prefix_cache = prefix_cache and kv_cache_dtype == "q8_0"
        self._chunk_quantum = 1 if kv_cache_dtype == "q8_0" else params.n_ubatch  # see prefill()
        self.backend = f"llamacpp-{'amx' if self.repacked else 'cpu'}-{kv_cache_dtype}"
        self.attention_span = ATTENTION_SPANS[kv_cache_dtype]
        logger.info(
            "llama.cpp: %d sequences x %d tokens, %s KV cache, prefix cache %s, weights %s, %d threads",
            max_batch_size, self.context_length, kv_cache_dtype, "on" if self._prefix_cache else "off",
            "repacked (AMX)" if self.repacked else "as stored", threads,
        )  # fmt: skip

    def admit(self, prompt_ids: list[int], scope: Hashable = None) -> tuple[int, int]:
        """Give a prompt a free sequence id, starting from the longest cached prefix of its scope.

        See :meth:`ModelRunner.admit`. Only ids whose cells were computed for the same
        ``scope`` are searched, so one scope never reuses (or learns the length of) another's
        prompt. The id is the free one holding that prefix, or, when a running sequence holds
        it (copied if it is at least ``MIN_COPIED_PREFIX`` tokens) or none does, the lowest
        free one. The last prompt token is always computed (its logits are the answer), so at
        most ``len(prompt_ids) - 1`` tokens are cached.

        Raises:
            RuntimeError: no free sequence id, or a prompt longer than ``context_length``.
        """
        free = self._free_ids()
        if not free:
            raise RuntimeError("No free llama.cpp sequence")
        if not 0 < len(prompt_ids) <= self.context_length:
            raise RuntimeError(f"A {len(prompt_ids)}-token prompt does not fit {self.context_length} tokens")
        # The longest shared prefix wins; among equals, a free id (no copy), the lowest first.
        cached, _, source = max(
            (_shared_prefix(tokens, prompt_ids) if self._prefix_cache and self._scopes[i] == scope else 0, i in free, -i)
            for i, tokens in enumerate(self._tokens)
        )
        source, cached = -source, min(cached, len(prompt_ids) - 1)
        # A free id is used in place (a gap it leaves is closed at the next step); a running one is copied.
        seq_id = source if source in free else free[0]
        if source != seq_id and cached < MIN_COPIED_PREFIX:
            source, cached = seq_id, 0
        handle = next(self._handles)
        self._seq_ids[handle] = seq_id
        try:
            if source != seq_id:
                self._copy(source, seq_id)
            if not self._lib.llama_memory_seq_rm(self._memory, seq_id, cached, -1):  # a partial removal may be refused
                self._lib.llama_memory_seq_rm(self._memory, seq_id, -1, -1)
                cached = 0
        except BaseException:
            self._forget(handle)
            raise
        self._tokens[seq_id] = prompt_ids[:cached]
        self._scopes[seq_id] = scope
        self._prompts[handle] = list(prompt_ids)
        return handle, cached

    def prefill(self, slot: int, max_tokens: int) -> tuple[int, np.ndarray | None]:
        """Compute the next ``max_tokens`` (at least 1) prompt tokens of ``slot``; see :meth:`ModelRunner.prefill`.

        A chunk is one ``llama_decode`` of this sequence's rows alone, its positions
        following the cells already computed, as a prompt that found its prefix in the
        cache: over the default q8_0 cache every row takes the same kernels whatever the
        chunk's length, so a prompt computed in chunks of any size gives the logits it gives
        at once (tested bit for bit). Over an f16 cache a row's attention depends on the
        rows computed with it, so there a chunk ends on a multiple of ``n_ubatch`` (128)
        tokens from the prompt's start (more than ``max_tokens`` when that is smaller): the
        very pieces llama.cpp splits a whole prompt into, hence the same logits again.

        Raises:
            RuntimeError: llama.cpp's decode failed (the sequence and its cells are dropped).
        """
        seq_id, prompt = self._seq_ids[slot], self._prompts[slot]
        start = len(self._tokens[seq_id])
        end = start + max(1, max_tokens)
        if end < len(prompt) and self._chunk_quantum > 1:  # end where a whole prefill's ubatches end
            end = max(end - end % self._chunk_quantum, start - start % self._chunk_quantum + self._chunk_quantum)
        end = min(len(prompt), end)
        try:
            self._fill(prompt[start:end], range(start, end), [seq_id] * (end - start))
            if end == len(prompt):
                self._batch.logits[end - start - 1] = 1
            self._decode()
        except BaseException:
            self._forget(slot)
            raise
        self._tokens[seq_id] = prompt[:end]
        if end < len(prompt):
            return end - start, None
        del self._prompts[slot]
        return end - start, self._logits(1)[0]

    def decode(self, slots: list[int], tokens: list[int], drafts: list[list[int]] | None = None) -> np.ndarray:
        """One token, then its row's drafts, for each sequence in ``slots``; see :meth:`ModelRunner.decode`.

        The rows go to llama.cpp in sequence-id order, after closing any gap in the ids
        (see the module's docstring); the logits come back in the caller's order. A row with
        drafts is several tokens of one sequence, as a prompt chunk is: over the q8_0 cache
        each gets the logits it gets decoded alone (tested). llama.cpp splits the batch into
        ubatches of as many tokens per sequence (``split_equal``): unequal rows cost more of them.

        Raises:
            RuntimeError: llama.cpp's decode failed (for example no room left in a cache).
        """
        self._compact()
        rows = [[token, *(drafts[row] if drafts else ())] for row, token in enumerate(tokens)]
        order = sorted(range(len(slots)), key=lambda row: self._seq_ids[slots[row]])
        seq_ids = [self._seq_ids[slots[row]] for row in order]
        flat, positions, ids = [], [], []
        for row, seq_id in zip(order, seq_ids, strict=True):
            start = len(self._tokens[seq_id])
            flat += rows[row]
            positions += range(start, start + len(rows[row]))
            ids += [seq_id] * len(rows[row])
        self._fill(flat, positions, ids)
        np.ctypeslib.as_array(self._batch.logits, shape=(len(flat),))[:] = 1
        self._decode()
        for row, seq_id in zip(order, seq_ids, strict=True):
            self._tokens[seq_id] += rows[row]
        logits = self._logits(len(flat))
        if order == sorted(order):
            return logits
        # Batch position of each of the caller's tokens: rows in the caller's order, each row's tokens in turn.
        starts = dict(zip(order, itertools.accumulate((len(rows[row]) for row in order), initial=0), strict=False))
        return logits[[starts[row] + k for row in range(len(rows)) for k in range(len(rows[row]))]]

    def rollback(self, slot: int, count: int) -> None:
        """Drop the last ``count`` tokens of a running sequence from its cache (drafts the
        scheduler did not take); the next :meth:`decode` continues from the token before them.

        Raises:
            RuntimeError: llama.cpp refused to remove the cells.
        """
        if count <= 0:
            return
        seq_id = self._seq_ids[slot]
        keep = len(self._tokens[seq_id]) - count
        if not self._lib.llama_memory_seq_rm(self._memory, seq_id, keep, -1):
            raise RuntimeError(f"llama.cpp refused to drop the last {count} cells of a sequence")
        del self._tokens[seq_id][keep:]

    def release(self, slot: int) -> None:
        """End the sequence; its id becomes free, its cells (what was computed) stay as a prefix cache."""
        self._seq_ids.pop(slot, None)
        self._prompts.pop(slot, None)

    def clear(self) -> None:
        """Drop every sequence and every cached prefix (for example after a failed step)."""
        self._seq_ids.clear()
        self._prompts.clear()
        clear_cache(self._lib, self._memory, self._kv_released)
        self._tokens = [[] for _ in self._tokens]
        self._scopes = [None for _ in self._scopes]

    def _free_ids(self) -> list[int]:
        running = set(self._seq_ids.values())
        return [i for i in range(len(self._tokens)) if i not in running]

    def _copy(self, source: int, target: int) -> None:
        """Make ``target``'s cells an exact copy of ``source``'s (:func:`.kv_pages.copy_sequence`)."""
        self._tokens[target] = []  # what it holds should the copy fail
        copy_sequence(self._lib, self._ctx, source, target)
        self._tokens[target] = list(self._tokens[source])
        self._scopes[target] = self._scopes[source]

    def _compact(self) -> None:
        """Move running sequences down until their ids are ``0 .. n-1``; the moved-from ids keep their cache."""
        free = self._free_ids()
        for handle, seq_id in sorted(self._seq_ids.items(), key=lambda item: -item[1]):
            if not free or free[0] > seq_id:
                return
            target = free.pop(0)
            self._copy(seq_id, target)
            self._seq_ids[handle] = target
            free.append(seq_id)
            free.sort()

    def _forget(self, slot: int) -> None:
        """End the sequence and drop its cells; nothing of it is reused."""
        seq_id = self._seq_ids.pop(slot, None)
        self._prompts.pop(slot, None)
        if seq_id is not None:
            self._lib.llama_memory_seq_rm(self._memory, seq_id, -1, -1)
            self._tokens[seq_id] = []

    def close(self) -> None:
        """Free the context, the batch and the weights; the runner is unusable afterwards."""
        if self._ctx:
            self._lib.llama_batch_free(self._batch)
            self._lib.llama_free(self._ctx)
            self._lib.llama_model_free(self._model)
            self._ctx = self._model = None

    def _fill(self, tokens: list[int], positions: Any, seq_ids: list[int]) -> None:
        batch = self._batch
        n = len(tokens)
        if n > self._capacity:
            raise RuntimeError(f"{n} tokens exceed the batch of {self._capacity}")
        batch.n_tokens = n
        np.ctypeslib.as_array(batch.token, shape=(n,))[:] = tokens
        np.ctypeslib.as_array(batch.pos, shape=(n,))[:] = list(positions)
        np.ctypeslib.as_array(batch.n_seq_id, shape=(n,))[:] = 1
        np.ctypeslib.as_array(batch.logits, shape=(n,))[:] = 0
        for i, seq_id in enumerate(seq_ids):
            batch.seq_id[i][0] = seq_id

    def _decode(self) -> None:
        status = self._lib.llama_decode(self._ctx, self._batch)
        if status != 0:
            raise RuntimeError(f"llama_decode returned {status}")

    def _logits(self, rows: int) -> np.ndarray:
        """Copy the logits of the batch's ``rows`` outputs (all of them, in batch order) into a
        float32 ``[rows, V]`` array: llama.cpp keeps them contiguous in that order (``llama_get_logits``)."""
        pointer = ctypes.cast(self._lib.llama_get_logits(self._ctx), ctypes.POINTER(ctypes.c_float))
        return np.ctypeslib.as_array(pointer, shape=(rows, self.vocab_size)).copy()


def _shared_prefix(a: list[int], b: list[int]) -> int:
    """How many leading tokens ``a`` and ``b`` have in common."""
    n = min(len(a), len(b))
    if n == 0:
        return 0
    differ = np.flatnonzero(np.asarray(a[:n]) != np.asarray(b[:n]))
    return int(differ[0]) if differ.size else n
