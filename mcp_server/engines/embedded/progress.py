"""Progress of a slow loading step: a tqdm bar on a terminal, a log line every few seconds elsewhere.

A first start can spend a minute converting a tokenizer (Gemma 3's 262,144 tokens: about
50 s) or a model; without a word from the server that looks like a hang. Ollama and LM
Studio show a bar; a service manager's log needs lines instead, as a bar's carriage
returns make no sense in a file.

Usage::

    with Progress("Loading gemma.gguf", total=1.0) as progress:
        load(callback=progress.update)        # update(fraction done), from any thread
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from typing import IO, Any

__all__ = ["LOG_INTERVAL", "Progress"]

logger = logging.getLogger("chatcap")

LOG_INTERVAL = 10.0
"""Seconds between two progress lines in a log (no terminal)."""


class Progress:
    """Reports one step while it runs; a context manager.

    On a terminal (``stream.isatty()``) a tqdm bar shows the share done (or the time spent
    when ``total`` is None). Elsewhere one line is logged at the start, one every
    ``interval`` seconds while the step runs ("45% after 20 s", or "still working after
    20 s") and one at the end with the time it took.

    Args:
        description: what the step does, e.g. ``Converting the tokenizer of gemma.gguf``.
        total: the amount :meth:`update` counts up to (1.0 for a fraction), or None when
            the step cannot tell how far it is.
        stream: where the bar goes and whose ``isatty`` decides (default ``sys.stderr``).
        interval: seconds between two log lines.
    """

    def __init__(self, description: str, total: float | None = None, *, stream: IO[str] | None = None,
                 interval: float = LOG_INTERVAL):  # fmt: skip
        self.description = description
        self.total = total
        self.stream = stream or sys.stderr
        self.interval = interval
        self.done = 0.0
        self._bar: Any = None
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None
        self._started = 0.0

    def __enter__(self) -> Progress:
        self._started = time.monotonic()
        if _is_terminal(self.stream):
            from tqdm import tqdm

            fmt = "{desc}: {percentage:3.0f}%|{bar}| {elapsed}" if self.total else "{desc}: {elapsed}"
            columns, rows = _terminal_size(self.stream)
            self._bar = tqdm(
                total=self.total, desc=self.description, file=self.stream, bar_format=fmt, leave=True,
                ncols=columns, nrows=rows,
            )  # fmt: skip
            if self.total is None:  # tqdm redraws only on updates: keep the clock moving
                self._ticker = threading.Thread(target=self._tick, args=(self._bar.refresh, 1.0), daemon=True)
        else:
            logger.info("%s ...", self.description)
            self._ticker = threading.Thread(target=self._tick, args=(self._log, self.interval), daemon=True)
        if self._ticker is not None:
            self._ticker.start()
        return self

    def update(self, done: float) -> None:
        """Record how much is done, out of ``total`` (thread-safe; the bar redraws at most 10 times a second)."""
        self.done = done
        bar = self._bar
        if bar is not None and self.total is not None:
            bar.n = min(done, self.total)
            if time.monotonic() - bar.last_print_t > 0.1:
                bar.refresh()

    def __exit__(self, exc_type: Any, exc: Any, traceback: Any) -> None:
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join()
        if self._bar is not None:
            if exc_type is None and self.total is not None:
                self._bar.n = self.total
            self._bar.close()
        if exc_type is None:
            logger.info("%s: done in %.1f s", self.description, time.monotonic() - self._started)

    def _tick(self, report: Any, every: float) -> None:
        while not self._stop.wait(every):
            report()

    def _log(self) -> None:
        elapsed = time.monotonic() - self._started
        if self.total:
            logger.info("%s: %.0f%% after %.0f s", self.description, 100 * self.done / self.total, elapsed)
        else:
            logger.info("%s: still working after %.0f s", self.description, elapsed)


def _terminal_size(stream: IO[str]) -> tuple[int, int]:
    """The terminal's columns and rows; 80 x 24 where it reports none (tqdm hides a bar on a
    pseudo-terminal nobody sized, which reports 0 x 0)."""
    try:
        size = os.get_terminal_size(stream.fileno())
    except (AttributeError, OSError, ValueError):
        return 80, 24
    return size.columns or 80, size.lines or 24


def _is_terminal(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False
