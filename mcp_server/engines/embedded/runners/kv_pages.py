"""The KV cache's memory, resident as sequences grow into it rather than all at once.

llama.cpp allocates the KV cache of every sequence when the context is created
(``n_seq_max x n_ctx_seq`` cells; SmolLM2-135M at 8 x 2,048 q8_0: 191 MB) and fills it with
zeros (``llama_kv_cache``'s constructor clears its buffers "to avoid NaNs in the padding"),
which makes every page of it resident before a single token is computed. A private anonymous
page that holds only zeros reads the same after ``madvise(MADV_DONTNEED)``: the kernel maps
its shared zero page until the page is written, and a write gets a fresh zero-filled page
(``madvise(2)``). Handing those pages back therefore changes nothing llama.cpp reads or
computes; the cache then costs memory a page at a time, as cells are written (about 0.5 MB a
sequence for a short chat with SmolLM2), up to the whole cache, where ``llama-server`` stays.

The buffers are found by what llama.cpp itself reports: the sizes it logs as
``KV buffer size = <MiB>`` while :func:`released_kv_pages`'s body runs. glibc serves a buffer
this large with a mapping of its own, whose first page also holds malloc's header (never
zero), so the buffer's pages are a run of zero pages, in the address ranges mapped meanwhile
(``/proc/self/maps``; the kernel merges neighbouring mappings), starting at a page boundary
and as long as the buffer. A size that matches no run, or more runs than buffers, releases
nothing (and off Linux nothing is found): the cache then stays resident, as before.
"""

from __future__ import annotations

import ctypes
import logging
import mmap
import re
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from mcp_server.engines.embedded.runners.llama_log import captured_log

__all__ = ["clear_cache", "copy_sequence", "release_pages", "released_kv_pages"]

logger = logging.getLogger(__name__)

PAGE = mmap.PAGESIZE
_KV_BUFFER = re.compile(r"KV buffer size =\s*([0-9.]+) MiB")
_MMAP_THRESHOLD = 4 * 2**20
"""Allocations from this size get their own mapping (:func:`_own_mappings_from`): smaller KV
buffers stay resident, and the steps' arrays (8 rows of logits: 1.5 MB) stay on the heap."""


@contextmanager
def released_kv_pages(lib: Any) -> Iterator[list[tuple[int, int]]]:
    """Around ``llama_init_from_model``: release the zero pages of the KV buffers it creates.

    A ``madvise`` that fails is logged and leaves the cache resident; nothing is raised.

    Args:
        lib: the ``llama_cpp.llama_cpp`` module.

    Yields:
        A list that, once the body has run, holds the (start, length) of each range released
        (for :func:`clear_cache`).
    """
    released: list[tuple[int, int]] = []
    _own_mappings_from(_MMAP_THRESHOLD)
    with captured_log(lib) as lines:  # and its lock: no other runner maps its buffers meanwhile
        before = _anonymous_mappings()
        yield released
        # A logged size is rounded to 0.01 MiB: the buffer is at least this long.
        sizes = [round((float(match.group(1)) - 0.005) * 2**20) for line in lines if (match := _KV_BUFFER.search(line))]
        insides = Counter(n for size in sizes if (n := (size // PAGE - 1) * PAGE) > 0)  # after malloc's header page
        shortest = min(insides, default=0)
        new = [(start, end) for start, end in _subtract(_anonymous_mappings(), before) if end - start > shortest]
        runs = [run for start, end in new for run in _zero_runs(start, end)] if shortest > 0 else []
        try:
            for inside, count in insides.items():
                starts = [start for start, end in runs if inside <= end - start <= inside + 6 * PAGE]
                if len(starts) == count:
                    released.extend((start, release_pages(start, inside)) for start in starts)
        except OSError as exc:
            logger.warning("The KV cache stays resident: %s", exc)
    logger.debug("KV buffers of %s bytes: %s released", sizes, released)


def _own_mappings_from(size: int) -> None:
    """Have glibc serve every allocation of ``size`` bytes or more with a mapping of its own
    (``mallopt(M_MMAP_THRESHOLD)``), fixing its threshold, which otherwise grows up to 32 MiB
    as such blocks are freed: a KV buffer below it would be carved from the heap, among
    other data, where no run of its pages can be told apart (measured: a 25 MB cache, 1 x
    2,048 tokens, stayed resident). Does nothing where the C library has no ``mallopt``.
    """
    try:
        ctypes.CDLL(None).mallopt(-3, size)  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        pass


def clear_cache(lib: Any, memory: Any, released: list[tuple[int, int]]) -> None:
    """``llama_memory_clear`` without making the whole cache resident again.

    Clearing the data writes zeros over every cell (all pages resident); clearing the cells'
    metadata only and releasing the ranges :func:`released_kv_pages` found gives the same
    zeros there. What lies outside them (at most a page at each buffer's ends) keeps the
    values of cells no sequence holds, which attention never weighs (their mask is -inf).

    Raises:
        OSError: ``madvise`` refused a range.
    """
    lib.llama_memory_clear(memory, not released)
    for start, length in released:
        release_pages(start, length)


def release_pages(start: int, length: int) -> int:
    """``madvise(MADV_DONTNEED)`` ``length`` bytes from ``start`` (page-aligned); returns ``length``.

    The range must be private anonymous pages that hold only zeros, or whose contents may
    become zeros, and that no other thread writes meanwhile. Transparent huge pages are
    turned off for it first where the kernel has them, so that a later write faults in one
    4 KiB page, not 2 MiB.

    Raises:
        OSError: ``madvise(MADV_DONTNEED)`` refused the range.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    libc.madvise(start, length, mmap.MADV_NOHUGEPAGE)  # fails (harmlessly) without transparent huge pages
    if libc.madvise(start, length, mmap.MADV_DONTNEED) != 0:
        raise OSError(ctypes.get_errno(), f"madvise(MADV_DONTNEED) of {length} bytes at {start:#x} failed")
    return length


def copy_sequence(lib: Any, ctx: Any, source: int, target: int) -> None:
    """Make sequence ``target``'s cells an exact copy of ``source``'s, writing only the cells in use.

    ``llama_memory_seq_cp`` between the streams of a per-sequence cache copies all
    ``n_ctx_seq`` cells of every layer (``llama_kv_cache::update``), which makes the whole
    target stream resident (25 MB for SmolLM2 at 2,048 cells, whatever the sequence's
    length). Instead ``target``'s cells are dropped and ``source``'s restored there from its
    serialized state (``llama_state_seq_get_data``/``set_data``: positions and the bytes of
    the rows, in order), which writes just those. A model with sliding-window layers keeps
    ``llama_memory_seq_cp``: its saved state leaves out the cells outside the window as seen
    from the source's last position, which a copied prefix's later tokens still attend to.

    Args:
        lib: the ``llama_cpp.llama_cpp`` module; ctx: its ``llama_context``.

    Raises:
        RuntimeError: llama.cpp could not save or restore the cells (``target`` then holds none).
    """
    memory = lib.llama_get_memory(ctx)
    lib.llama_memory_seq_rm(memory, target, -1, -1)  # set_data drops them only when the source has cells
    if lib.llama_model_n_swa(lib.llama_get_model(ctx)) > 0:
        lib.llama_memory_seq_cp(memory, source, target, -1, -1)
        return
    size = lib.llama_state_seq_get_size(ctx, source)
    state = np.empty(size, dtype=np.uint8)  # not zero-filled: only the bytes written become resident
    pointer = state.ctypes.data_as(ctypes.POINTER(ctypes.c_uint8))
    written = lib.llama_state_seq_get_data(ctx, pointer, size, source)
    if written != size or lib.llama_state_seq_set_data(ctx, pointer, written, target) != written:
        lib.llama_memory_seq_rm(memory, target, -1, -1)
        raise RuntimeError(f"llama.cpp could not copy sequence {source}'s {size}-byte state to sequence {target}")


def _zero_runs(start: int, end: int) -> list[tuple[int, int]]:
    """The runs of all-zero pages in ``[start, end)``, as (start, end) addresses.

    Read in place: a page never written maps the kernel's zero page and stays unresident
    (reading through ``/proc/self/mem`` or ``process_vm_readv`` instead, which would survive
    a range unmapped meanwhile, made every page read resident: measured +64 MB for 64 MB).
    Only ranges mapped during ``llama_init_from_model`` and longer than the shortest buffer
    sought are read, while no other runner is being built.
    """
    words = np.frombuffer((ctypes.c_char * (end - start)).from_address(start), dtype=np.uint64)
    zero = np.concatenate(([False], ~words.reshape(-1, PAGE // 8).any(axis=1), [False]))
    edges = np.flatnonzero(np.diff(zero.astype(np.int8))) * PAGE + start
    return list(zip(edges[::2].tolist(), edges[1::2].tolist(), strict=True))


def _subtract(ranges: set[tuple[int, int]], old: set[tuple[int, int]]) -> list[tuple[int, int]]:
    """The address ranges covered by ``ranges`` and by none of ``old``."""
    out = []
    for start, end in sorted(ranges):
        for old_start, old_end in sorted(old):
            if old_end <= start or old_start >= end:
                continue
            if old_start > start:
                out.append((start, old_start))
            start = max(start, old_end)
        if start < end:
            out.append((start, end))
    return out


def _anonymous_mappings() -> set[tuple[int, int]]:
    """(start, end) of this process's private, writable mappings with no file or name; empty off Linux."""
    try:
        with open("/proc/self/maps") as maps:
            lines = maps.read().splitlines()
    except OSError:
        return set()
    found = set()
    for line in lines:
        fields = line.split()
        if len(fields) == 5 and fields[1] == "rw-p":
            start, end = fields[0].split("-")
            found.add((int(start, 16), int(end, 16)))
    return found
