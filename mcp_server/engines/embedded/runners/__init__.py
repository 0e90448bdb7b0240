"""Model runners: what the scheduler calls to run the network, and nothing else.

A runner owns the weights and the key/value caches of the running sequences. It
admits a sequence (from a cached prefix of the same scope when it has a prefix cache),
prefills its prompt a chunk at a time, decodes one token for a set of running sequences
(and, where the runner takes them, tokens drafted after it: jump-forward), and releases a
sequence. Everything else (sampling, penalties, grammar masks, stop strings,
cancellation) stays in :mod:`..scheduler`, the same for every runner.

Two runners:

* :mod:`.llamacpp` (``llamacpp``): llama.cpp through llama-cpp-python's low-level API,
  on GGUF files, on the CPU. The default for GGUF files on the CPU.
* :mod:`.torch_runner` (``torch``): transformers, on Hugging Face directories or GGUF
  files dequantized to bf16/fp32, on the CPU or CUDA.
"""

from __future__ import annotations

import ctypes
import gc
import logging
import os
from collections.abc import Hashable
from pathlib import Path
from typing import Protocol

import numpy as np

from mcp_server.errors import InvalidRequest

__all__ = [
    "RUNNERS",
    "ModelRunner",
    "check_llamacpp_option",
    "default_threads",
    "limit_malloc_arenas",
    "resolve_runner",
    "resolve_threads",
    "return_freed_memory",
]

logger = logging.getLogger(__name__)

RUNNERS = ("auto", "llamacpp", "torch")


class ModelRunner(Protocol):
    """The seam between the scheduler and a backend. Called from the scheduler thread only.

    Attributes:
        vocab_size: the number of logits per row, ``V``.
        context_length: most tokens (prompt plus completion) one sequence may hold.
        eos_ids: end-of-sequence token ids the weights declare.
        backend: how the runner computes, e.g. ``llamacpp-amx-q8_0`` or
            ``torch-bfloat16-cpu``: kernels and number formats whose answers differ
            slightly, so it is part of the responses' ``system_fingerprint``.
        attention_span: tokens of context at which a prompt token's attention costs about
            what the rest of its computation does, so that a token at position ``p`` costs
            ``1 + p / attention_span`` short-context tokens (:func:`.policy.prompt_chunk`);
            None when the runner's cost does not grow with the context that way.
        takes_drafts: :meth:`decode` takes drafted tokens and :meth:`rollback` drops them
            (llama.cpp); False: one token per row (torch).
    """

    vocab_size: int
    context_length: int
    eos_ids: frozenset[int]
    backend: str
    attention_span: int | None
    takes_drafts: bool

    def admit(self, prompt_ids: list[int], scope: Hashable = None) -> tuple[int, int]:
        """Give a prompt a new sequence, without computing it yet (see :meth:`prefill`).

        Args:
            prompt_ids: the prompt's token ids, at most ``context_length`` of them.
            scope: who may share cached prefixes: a prompt reuses only cells computed for
                an equal scope (the scheduler passes the tenant, or its ``cache_salt``).

        Returns:
            ``(slot, cached_tokens)``: the handle of the new sequence (pass it to
            :meth:`prefill`, :meth:`decode` and :meth:`release`), and how many leading
            prompt tokens were found in a cache instead of computed (OpenAI's
            ``cached_tokens``; 0 for a runner without a prefix cache).
        """
        ...

    def prefill(self, slot: int, max_tokens: int) -> tuple[int, np.ndarray | None]:
        """Compute the next prompt tokens of an admitted sequence: at most ``max_tokens`` (>= 1).

        A runner that cannot split a prompt (torch) computes all of it at once.

        Returns:
            ``(computed, logits)``: how many prompt tokens this call computed, and, once the
            last prompt token is computed, the float32 ``[V]`` logits of that position, on
            the CPU, owned by the caller; None before. The sequence joins :meth:`decode`
            only after its logits came back.
        """
        ...

    def decode(self, slots: list[int], tokens: list[int], drafts: list[list[int]] | None = None) -> np.ndarray:
        """Append one token to each sequence in ``slots``, then its drafted tokens, and return
        the logits after each appended token.

        Args:
            slots: the running sequences, in a stable order: the rows of the last call
                that were not released, then newly prefilled ones in prefill order.
            tokens: the token appended to each, same order.
            drafts: per row, tokens appended after its token (the grammar's forced tokens,
                see :mod:`..scheduler`); None or empty lists: none. Only where
                ``takes_drafts``.

        Returns:
            float32 ``[len(slots) + sum(len(d) for d in drafts), V]`` CPU logits, owned by the
            caller: the rows in the order of ``slots``, each row's logits after its token then
            after each of its drafts; ``[len(slots), V]`` without drafts.
        """
        ...

    def rollback(self, slot: int, count: int) -> None:
        """Drop the last ``count`` tokens :meth:`decode` appended to a running sequence (drafts
        that were not taken); only where ``takes_drafts``."""
        ...

    def release(self, slot: int) -> None:
        """End a sequence (finished, cancelled or failed); its slot may be reused.

        A runner with a prefix cache may keep the sequence's keys and values for a later
        prompt that starts with the same tokens.
        """
        ...

    def clear(self) -> None:
        """Drop every sequence and every cached prefix."""
        ...

    def close(self) -> None:
        """Free what the runner holds outside Python's memory; called once, at shutdown."""
        ...


def default_threads() -> int:
    """Compute threads when ``--threads`` is not given: one per usable core, less one.

    Measured on a 2-core machine shared with other work (SmolLM2-135M Q4_1, llama.cpp):
    1 thread gave 34-36 tok/s for one sequence and 75-77 tok/s for eight; 2 threads gave
    121 / 215 tok/s when the cores happened to be idle but 12 / 31 tok/s (and a 3.5 s
    prefill of 81 tokens against 0.4-0.6 s) while another process ran, because llama.cpp
    and PyTorch threads spin waiting for each other. A bare torch step took 1,920 ms with
    2 threads against 51 ms with 1 under the same load; over HTTP, one request decoded at
    1.3 (llama.cpp) and 2.1 (torch) tok/s with 2 threads against 29.0 and 12.5 with 1
    (``benchmarks/bench_serving.py``, busy machine). One core is therefore left to the
    HTTP server and to neighbours, as vLLM's CPU backend does.
    """
    return max(1, _usable_cores() - 1)


def resolve_threads(threads: int | None) -> int:
    """The compute threads: ``threads``, or :func:`default_threads` when None.

    Logs a warning when they take every usable core: then the HTTP server, the scheduler
    or any neighbouring process preempts one of llama.cpp's workers, and the others wait
    for it at each of a step's barriers (see :func:`default_threads`). On idle cores a
    second thread pays: one request decoded at 234 tok/s with 2 threads against 139 with 1
    on a 2-core AMX Xeon (``benchmarks/bench_serving.py``).
    """
    resolved = threads or default_threads()
    cores = _usable_cores()
    if resolved >= cores > 1:
        logger.warning(
            "%d compute threads on %d usable cores leave none to the HTTP server, the scheduler or "
            "other processes; throughput collapses when anything else needs a core (measured on a busy "
            "2-core machine: 12 tok/s with 2 threads against 34-36 with 1)",
            resolved, cores,
        )  # fmt: skip
    return resolved


def _usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def resolve_runner(runner: str, model_path: str | None, device: str) -> str:
    """Pick the runner for ``auto``: llama.cpp for GGUF files on the CPU, else torch.

    Args:
        runner: ``auto``, ``llamacpp`` or ``torch``.
        model_path: the model path, None for the bundled GGUF file.
        device: ``cpu``, ``cuda``, ...

    Raises:
        InvalidRequest: (param ``runner``) an unknown runner name, or ``llamacpp`` asked
            for a model directory or a non-CPU device.
    """
    if runner not in RUNNERS:
        raise InvalidRequest(f"Unknown runner {runner!r}; use one of {', '.join(RUNNERS)}.", param="runner")
    gguf = model_path is None or Path(model_path).suffix == ".gguf"
    if runner == "auto":
        return "llamacpp" if gguf and device == "cpu" else "torch"
    if runner == "llamacpp" and not (gguf and device == "cpu"):
        raise InvalidRequest("The llamacpp runner reads GGUF files on the CPU only; use --runner torch.", param="runner")
    return runner


def check_llamacpp_option(runner: str, param: str, value: str, choices: tuple[str, ...]) -> str:
    """Return ``value`` of a llama.cpp runner option (``param``, e.g. ``repack``) once checked.

    Raises:
        InvalidRequest: (param ``param``) ``value`` is not one of ``choices``, or is not
            ``auto`` while ``runner`` is not ``llamacpp``.
    """
    if value not in choices:
        raise InvalidRequest(f"Unknown {param} {value!r}; use one of {', '.join(choices)}.", param=param)
    if value != "auto" and runner != "llamacpp":
        raise InvalidRequest(f"--{param.replace('_', '-')} applies to the llamacpp runner only.", param=param)
    return value


def limit_malloc_arenas(arenas: int = 2) -> None:
    """Cap glibc's malloc arenas (``mallopt(M_ARENA_MAX)``, as ``MALLOC_ARENA_MAX`` does).

    glibc gives each thread that allocates its own arena of up to 64 MB, and the engine's
    worker threads (tokenizing, compiling) each leave one partly resident. Call it before
    those threads start. Does nothing where the C library has no ``mallopt``.
    """
    try:
        ctypes.CDLL(None).mallopt(-8, arenas)  # M_ARENA_MAX
    except (OSError, AttributeError):
        pass


def return_freed_memory() -> None:
    """Hand the memory that loading freed back to the kernel (glibc's ``malloc_trim(0)``).

    Parsing the tokenizer and building the grammar backend's copy of it leave freed heap
    pages resident: measured 19 MB of RSS returned after start-up. Does nothing where the C
    library has no ``malloc_trim``.
    """
    gc.collect()
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):
        pass
