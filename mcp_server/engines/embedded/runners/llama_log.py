"""llama.cpp's log while a call runs: read by the runner, still printed as llama-cpp-python prints it.

llama.cpp reports what the C API does not return through its log callback (``llama_log_set``,
process-wide): why a model failed to load, and the sizes of the buffers it allocated
(:mod:`.kv_pages`). llama-cpp-python installs a callback that prints to stderr the lines at or
above the ``llama-cpp-python`` logger's level; :func:`captured_log` installs one in front of it
that also hands the lines to the ``with`` block running.
"""

from __future__ import annotations

import ctypes
import logging
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["captured_log", "failure_reason", "quiet_llama_log"]

_LOCK = threading.Lock()  # one capture at a time: the callback is process-wide
_callback: Any = None  # the installed ctypes callback, kept alive for the process
_lines: list[str] | None = None  # where the current capture's lines go
_ERROR = re.compile(r"error loading model: (.+)")


def quiet_llama_log() -> None:
    """Print only llama.cpp's errors, unless the ``llama-cpp-python`` logger's level was set."""
    llama_log = logging.getLogger("llama-cpp-python")
    if llama_log.level == logging.NOTSET:
        llama_log.setLevel(logging.ERROR)


@contextmanager
def captured_log(lib: Any) -> Iterator[list[str]]:
    """Collect llama.cpp's log lines while the body runs (one capture at a time: others wait).

    One callback is installed, on first use, for the life of the process: llama.cpp reads
    the callback pointer without a lock, so one that another thread may still be calling
    is never freed. Outside a capture it does what llama-cpp-python's own callback does.

    Args:
        lib: the ``llama_cpp.llama_cpp`` module.

    Yields:
        The list the lines are appended to (text as logged, newlines included).
    """
    global _lines
    with _LOCK:
        _install(lib)
        _lines = lines = []
        try:
            yield lines
        finally:
            _lines = None


def _install(lib: Any) -> None:
    """Set the process-wide callback once (called under ``_LOCK``)."""
    global _callback
    if _callback is not None:
        return
    import llama_cpp._logger as llama_logger  # llama-cpp-python's own callback, which prints

    def note(level: int, text: bytes, user_data: Any) -> None:
        lines = _lines
        if lines is not None:
            lines.append((text or b"").decode("utf-8", "replace"))
        llama_logger.llama_log_callback(level, text, user_data)

    _callback = lib.llama_log_callback(note)
    lib.llama_log_set(_callback, ctypes.c_void_p(0))


def failure_reason(lines: list[str]) -> str:
    """``": <why>"`` from llama.cpp's ``error loading model: <why>`` line, or ``""`` without one."""
    reasons = [match.group(1).strip() for line in lines if (match := _ERROR.search(line))]
    return f": {reasons[-1]}" if reasons else ""
