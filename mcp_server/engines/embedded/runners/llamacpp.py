"""The llama.cpp runner: quantized GGUF compute through llama-cpp-python's low-level API.

One ``llama_context`` serves every running sequence. Each sequence has its own sequence
id and its own KV cache stream (``kv_unified = false``), and a decode step is one
``llama_batch`` holding one token per running sequence. With separate streams a row's
attention never sees another row's cache layout, and the weights' dot products are
computed per row by llama.cpp's CPU kernels, so a sequence's logits do not depend on
what else is in the batch: batched greedy output equals unbatched output (tested in
``tests/test_engine.py``). The unified cache breaks that (llama.cpp issue 24962).

Memory is allocated once, when the context is created: the KV cache holds
``context_length * max_batch_size`` tokens at f16 (about 23 KB per token for
SmolLM2-135M: 30 layers x 2 x 3 KV heads x 64 x 2 bytes), and the compute buffer grows
with ``n_ubatch`` (128 here: ~25 MB, against ~98 MB at llama.cpp's default 512).

Tokenization stays with the Hugging Face tokenizer (the chat template's ids are fed to
llama.cpp as they are), so prompts, detokenization and xgrammar's vocabulary are the
same for both runners.
"""

from __future__ import annotations

import ctypes
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["DEFAULT_CONTEXT_LENGTH", "DEFAULT_MAX_BATCH_SIZE", "LlamaCppRunner"]

logger = logging.getLogger(__name__)

DEFAULT_CONTEXT_LENGTH = 2048
"""Tokens per sequence when ``--context-length`` is not given: 8 x 2048 x 23 KB = 360 MB of KV.

Measured resident memory of a process on this runner (SmolLM2-135M Q4_1): ~268 MB for
Python with torch, transformers and xgrammar imported, 92 MB of mapped weights, ~25 MB
of compute buffer, plus the KV cache: ~750 MB at 8 x 2048, ~565 MB at 8 x 1024 or
4 x 2048. A q8_0 KV cache (with flash attention) halved the cache but made decode steps
15-25% slower, so the cache stays f16."""

DEFAULT_MAX_BATCH_SIZE = 8
"""Sequences decoded together when ``--max-running-requests`` is not given. Measured on
one core (Q4_1): 36 / 65 / 77 tok/s in aggregate at 1 / 4 / 8 sequences; a step of
llama.cpp's quantized kernels grows almost linearly with the rows, so more buys little."""

_N_UBATCH = 128


class LlamaCppRunner:
    """Runs a GGUF model in llama.cpp for up to ``max_batch_size`` sequences at once.

    Args:
        gguf_path: the GGUF file.
        max_batch_size: sequences held at once (llama.cpp's ``n_seq_max``).
        context_length: tokens per sequence (llama.cpp's ``n_ctx_seq``); None =
            :data:`DEFAULT_CONTEXT_LENGTH`, capped at the model's training context.
        threads: llama.cpp compute threads, for prefill and decode alike.

    Attributes:
        vocab_size: logits per row.
        context_length: tokens per sequence, as llama.cpp sized it.
        eos_ids: the GGUF's end-of-sequence and end-of-turn tokens.

    Raises:
        RuntimeError: llama-cpp-python is missing, or llama.cpp cannot load the file
            or create the context.
    """

    def __init__(self, gguf_path: Path, max_batch_size: int, context_length: int | None, threads: int):
        try:
            import llama_cpp.llama_cpp as lib
        except ImportError as exc:
            raise RuntimeError("The llamacpp runner needs llama-cpp-python: pip install llama-cpp-python==0.3.36") from exc
        llama_log = logging.getLogger("llama-cpp-python")  # its C log callback prints below this level
        if llama_log.level == logging.NOTSET:
            llama_log.setLevel(logging.ERROR)
        self._lib = lib
        lib.llama_backend_init()
        model_params = lib.llama_model_default_params()
        # Weight repacking into "extra" buffer types (AMX, CPU_REPACK) crashed in
        # ggml_backend_amx_mul_mat on an AMX Xeon VM; the plain CPU buffers are safe everywhere.
        model_params.use_extra_bufts = False
        self._model = lib.llama_model_load_from_file(str(gguf_path).encode(), model_params)
        if not self._model:
            raise RuntimeError(f"llama.cpp could not load {gguf_path}")
        n_ctx_train = lib.llama_model_n_ctx_train(self._model)
        per_sequence = min(context_length or DEFAULT_CONTEXT_LENGTH, n_ctx_train)
        params = lib.llama_context_default_params()
        params.n_ctx = per_sequence * max_batch_size
        params.n_seq_max = max_batch_size
        params.kv_unified = False
        params.n_batch = per_sequence  # a whole prompt in one llama_decode call
        params.n_ubatch = min(_N_UBATCH, per_sequence)
        params.n_threads = params.n_threads_batch = threads
        params.no_perf = True
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
        self._free = list(range(max_batch_size - 1, -1, -1))  # seq ids; pop() takes the lowest
        self._positions: dict[int, int] = {}
        logger.info("llama.cpp: %d sequences x %d tokens, %d threads", max_batch_size, self.context_length, threads)

    def prefill(self, prompt_ids: list[int]) -> tuple[int, torch.Tensor]:
        """Read a prompt into a free sequence id; see :meth:`ModelRunner.prefill`.

        Raises:
            RuntimeError: no free sequence id, a prompt longer than ``context_length``,
                or llama.cpp's decode failed (the sequence is released).
        """
        if not self._free:
            raise RuntimeError("No free llama.cpp sequence")
        if not 0 < len(prompt_ids) <= self.context_length:
            raise RuntimeError(f"A {len(prompt_ids)}-token prompt does not fit {self.context_length} tokens")
        slot = self._free.pop()
        try:
            n = len(prompt_ids)
            self._fill(prompt_ids, range(n), [slot] * n)
            self._batch.logits[n - 1] = 1
            self._decode()
            self._positions[slot] = n
            return slot, self._logits(1)[0]
        except BaseException:
            self.release(slot)
            raise

    def decode(self, slots: list[int], tokens: list[int]) -> torch.Tensor:
        """One token for each sequence in ``slots``; see :meth:`ModelRunner.decode`.

        Raises:
            RuntimeError: llama.cpp's decode failed (for example no room left in a cache).
        """
        self._fill(tokens, [self._positions[s] for s in slots], slots)
        for i in range(len(slots)):
            self._batch.logits[i] = 1
        self._decode()
        for s in slots:
            self._positions[s] += 1
        return self._logits(len(slots))

    def release(self, slot: int) -> None:
        """Drop the sequence's KV cells and give its id back."""
        self._lib.llama_memory_seq_rm(self._memory, slot, -1, -1)
        self._positions.pop(slot, None)
        if slot not in self._free:
            self._free.append(slot)

    def clear(self) -> None:
        """Drop every sequence."""
        for slot in list(self._positions):
            self.release(slot)

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

    def _logits(self, rows: int) -> torch.Tensor:
        """Copy the logits of the batch's first ``rows`` outputs into a float32 ``[rows, V]`` tensor."""
        out = np.empty((rows, self.vocab_size), dtype=np.float32)
        for i in range(rows):
            pointer = self._lib.llama_get_logits_ith(self._ctx, i if rows > 1 else -1)
            out[i] = np.ctypeslib.as_array(ctypes.cast(pointer, ctypes.POINTER(ctypes.c_float)), shape=(self.vocab_size,))
        return torch.from_numpy(out)
