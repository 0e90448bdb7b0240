"""llama.cpp's log while a call runs: read by the runner, still printed as llama-cpp-python prints it.

llama.cpp reports what the C API does not return through its log callback (``llama_log_set``,
process-wide): why a model failed to load, and the sizes of the buffers it allocated
(:mod:`.kv_pages`). llama-cpp-python installs a callback that prints to stderr the lines at or
above the ``llama-cpp-python`` logger's level; :func:`captured_log` puts one in front of it for
the length of a ``with`` block.
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
_ERROR = re.compile(r"error loading model: (.+)")


def quiet_llama_log() -> None:
    """Print only llama.cpp's errors, unless the ``llama-cpp-python`` logger's level was set."""
    llama_log = logging.getLogger("llama-cpp-python")
    if llama_log.level == logging.NOTSET:
        llama_log.setLevel(logging.ERROR)


@contextmanager
def captured_log(lib: Any) -> Iterator[list[str]]:
    """Collect llama.cpp's log lines while the body runs.

    Args:
        lib: the ``llama_cpp.llama_cpp`` module.

    Yields:
        The list the lines are appended to (text as logged, newlines included).
    """
    import llama_cpp._logger as llama_logger  # llama-cpp-python's own callback, restored after

    lines: list[str] = []

    @lib.llama_log_callback
    def note(level: int, text: bytes, user_data: Any) -> None:
        lines.append((text or b"").decode("utf-8", "replace"))
        llama_logger.llama_log_callback(level, text, user_data)

    with _LOCK:
        lib.llama_log_set(note, ctypes.c_void_p(0))
        try:
            yield lines
        finally:
            lib.llama_log_set(llama_logger.llama_log_callback, ctypes.c_void_p(0))


def failure_reason(lines: list[str]) -> str:
    """``": <why>"`` from llama.cpp's ``error loading model: <why>`` line, or ``""`` without one."""
    reasons = [match.group(1).strip() for line in lines if (match := _ERROR.search(line))]
    return f": {reasons[-1]}" if reasons else ""
