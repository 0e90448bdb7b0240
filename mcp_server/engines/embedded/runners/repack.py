"""Weight repacking for the llama.cpp runner: whether to use it, decided once per build and model.

llama.cpp can copy a GGUF file's weights into "extra" buffer types laid out for a CPU's
matrix units (``llama_model_params.use_extra_bufts``; ``llama-server --repack`` /
``--no-repack``). On Intel CPUs with AMX its AMX buffer type computes Q4_0, Q4_1, Q8_0 and
K-quant products on the tile units (one row: AVX512-VNNI). Measured on a 2-core AMX Xeon,
one thread, SmolLM2-135M Q4_1, q8_0 cache: a decode step of 1 / 4 / 8 rows took
6.3 / 15.5 / 21.0 ms against 17.2 / 34.7 / 59.0 ms with plain buffers, and a 40-token
prompt 48 ms against 201 ms.

Two hazards decide the default:

* GCC 12 drops the stores that fill llama.cpp's AMX tile configuration (it does not see
  that ``ldtilecfg`` reads them), so a llama.cpp it built crashes in
  ``ggml_backend_amx_mul_mat`` on the first product of more than one row (llama.cpp pull
  request 26954). The Makefile builds llama-cpp-python with ``-fno-dse -fno-tree-dse``,
  which keeps the stores; a llama-cpp-python built elsewhere may still crash.
* Batch invariance. ggml's AMX kernels add a row's blocks in the same order whatever the
  number of rows, and the single-row VNNI kernel in that order too, so a row's logits do
  not depend on the batch (tested bit for bit on the bundled model). llama.cpp's other
  repacked layouts (``CPU_REPACK``, e.g. Q4_0 on AVX2) compute rows in groups and are not
  checked here.

So ``auto`` repacks only on CPUs that report AMX, and only after a child process
(:mod:`.repack_probe`) has decoded a batch with repacked weights without crashing. The
answer is cached under the cache folder, per llama.cpp library build, model file, CPU
model and thread count.
"""

from __future__ import annotations

import ctypes
import hashlib
import importlib.util
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

from mcp_server.engines.embedded.progress import Progress

__all__ = ["REPACK_MODES", "cpu_has_amx", "one_openmp_thread", "repack_works", "resolve_repack"]

logger = logging.getLogger(__name__)

REPACK_MODES = ("auto", "on", "off")
"""Values of ``--repack``: ``auto`` (on where the CPU has AMX and a probe decodes), ``on``, ``off``."""

_PROBE_TIMEOUT_S = 300
"""A probe loads the model and decodes 9 rows: ~1 s on an idle core; a busy machine gets time."""

_STOP_SIGNALS = frozenset({signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGKILL, signal.SIGQUIT})
"""Signals that end a probe from outside; a crash shows as SIGSEGV, SIGILL, SIGBUS or SIGABRT instead."""


def cpu_has_amx() -> bool:
    """True when ``/proc/cpuinfo`` lists the AMX tile and int8 features (False elsewhere, e.g. not Linux)."""
    return {"amx_tile", "amx_int8"} <= set(_cpuinfo("flags").split())


def resolve_repack(mode: str, gguf_path: Path, threads: int, cache_dir: Path) -> bool:
    """Decide whether the llama.cpp runner loads ``gguf_path`` with repacked weights.

    Args:
        mode: one of :data:`REPACK_MODES`; ``on`` and ``off`` are taken as they are.
        gguf_path: the model file.
        threads: the runner's compute threads (the probe uses as many).
        cache_dir: where probe answers are kept (a ``repack-probe`` folder in it).

    Raises:
        ValueError: an unknown mode.
    """
    if mode not in REPACK_MODES:
        raise ValueError(f"Unknown repack mode {mode!r}; use one of {', '.join(REPACK_MODES)}")
    if mode != "auto":
        return mode == "on"
    return cpu_has_amx() and repack_works(gguf_path, threads, cache_dir)


def repack_works(gguf_path: Path, threads: int, cache_dir: Path) -> bool:
    """True when :mod:`.repack_probe`, run in a child process, decoded with repacked weights.

    The answer (``works`` or ``fails``) is kept in ``cache_dir/repack-probe``, named by
    the llama.cpp libraries, the model file, the CPU model and ``threads``; a probe that
    runs out of time, or that a signal stopped rather than crashed (:data:`_STOP_SIGNALS`,
    e.g. the SIGTERM a service manager sends the whole process group), counts as failed
    and is not kept. A failure, and a kept ``fails``, is logged as a warning. A kept file
    that holds neither answer (damaged, or not readable) is probed again and replaced.
    """
    answer = cache_dir / "repack-probe" / f"{_probe_key(gguf_path, threads)}.txt"
    kept = _kept_answer(answer)
    if kept is False:
        logger.warning("A kept probe answer says repacked weights fail (%s); running without; delete it to probe again", answer)
    if kept is not None:
        return kept
    probe = Path(__file__).with_name("repack_probe.py")
    try:
        with Progress(f"Checking that {gguf_path.name} decodes with AMX-repacked weights (first start only)"):
            done = subprocess.run(
                [sys.executable, str(probe), str(gguf_path), str(threads)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=_PROBE_TIMEOUT_S,
            )  # fmt: skip
    except subprocess.TimeoutExpired:
        logger.warning("The weight repacking probe took over %d s; running without repacking", _PROBE_TIMEOUT_S)
        return False
    if -done.returncode in _STOP_SIGNALS:  # stopped from outside (a service manager's SIGTERM to the group): no answer
        logger.warning(
            "The weight repacking probe was stopped by %s; running without repacking, probing again next start",
            signal.Signals(-done.returncode).name,
        )
        return False
    works = done.returncode == 0
    if not works:
        crashed = -done.returncode == signal.SIGSEGV
        logger.warning(
            "llama.cpp failed with repacked (AMX) weights (probe exit status %d); running without.%s",
            done.returncode,
            " A llama-cpp-python built by GCC 12 without -fno-dse -fno-tree-dse crashes so (see the README)."
            if crashed else "",
        )  # fmt: skip
    try:
        answer.parent.mkdir(parents=True, exist_ok=True)
        staging = answer.with_name(f"{answer.name}.tmp-{os.getpid()}")
        staging.write_text("works" if works else "fails")
        staging.replace(answer)
    except OSError as exc:
        logger.warning("Could not cache the repacking probe's answer in %s (%s)", answer, exc)
    return works


def _kept_answer(answer: Path) -> bool | None:
    """The answer kept in ``answer``: True (``works``), False (``fails``), None when there is none."""
    try:
        text = answer.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        logger.warning("Could not read the repacking probe's answer in %s (%s); probing again", answer, exc)
        return None
    kept = {b"works": True, b"fails": False}.get(text.strip())
    if kept is None:
        logger.warning("The repacking probe's answer in %s is damaged (%r); probing again", answer, text[:40])
    return kept


def _probe_key(gguf_path: Path, threads: int) -> str:
    """A name that changes with the llama.cpp libraries, the model file, the CPU model and the thread count."""
    spec = importlib.util.find_spec("llama_cpp")
    folder = Path(spec.origin).parent / "lib" if spec and spec.origin else None
    files = sorted(folder.glob("libggml*")) if folder and folder.is_dir() else []
    parts = [f"{path}|{path.stat().st_size}|{path.stat().st_mtime_ns}" for path in [*files, gguf_path.resolve()]]
    parts.append(_cpuinfo("model name"))  # a cache folder may be shared between hosts
    return hashlib.sha256("\n".join([*parts, str(threads)]).encode()).hexdigest()[:16]


def _cpuinfo(field: str) -> str:
    """The first ``field`` line's value in ``/proc/cpuinfo`` ("" when there is none, e.g. not Linux)."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return ""
    return next((line.split(":", 1)[1].strip() for line in lines if line.split(":", 1)[0].strip() == field), "")


def one_openmp_thread() -> None:
    """``omp_set_num_threads(1)`` for the calling thread, through the libgomp llama.cpp loaded.

    Without torch in the process this is the only way to set it; a missing libgomp (a build
    without OpenMP) leaves nothing to set.
    """
    try:
        ctypes.CDLL("libgomp.so.1").omp_set_num_threads(1)
    except (OSError, AttributeError):
        pass
