"""A bounded cache of compiled grammars, with a time limit on compiling (off the event loop)."""

from __future__ import annotations

import concurrent.futures
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from mcp_server.engines.embedded.decoding.constraints import SCHEMA_PARAM
from mcp_server.errors import EngineUnavailable, InvalidRequest

__all__ = ["COMPILE_TIMEOUT", "GrammarCache"]

COMPILE_TIMEOUT = 10.0
"""Seconds a request waits for its grammar to compile (then 400)."""


class GrammarCache:
    """A bounded LRU cache of compiled grammars, with a time limit on compiling.

    Keys are canonical request texts (``json.dumps`` of the schema or tool set, key order
    kept: property order decides the order in which the grammar emits properties).
    Thread-safe: the engine compiles on worker threads, off the event loop.

    Each miss compiles on its own daemon thread and the caller stops waiting after
    ``compile_timeout`` seconds. The backends bound the work behind it: xgrammar's
    compilation runs in a child process killed at the same limit, llguidance's is bounded by
    its own limits (:mod:`.backends`); the grammar of a late compilation is dropped, not
    cached. At most ``max_compiling`` compilations run at once (late ones included), so they
    cannot pile up and starve the CPU; a miss that finds no free slot within
    ``compile_timeout`` gets 503.

    Attributes:
        maxsize: the most grammars kept; the least recently used one is dropped first.
        max_bytes: the most memory the kept grammars may take together (as ``sizeof``
            reports it; xgrammar's ``CompiledGrammar.memory_size_bytes``, measured: about 49 KB
            for ``json_object``, 32 MB for an object of 100 string properties with distinct
            ``pattern`` s); a grammar larger than this on its own is used once and not kept.
        compile_timeout: seconds a caller waits for one compilation.
        max_compiling: compilations that may run at once.
        hits: lookups served from the cache.
        misses: lookups that compiled.
    """

    def __init__(
        self,
        maxsize: int = 256,
        max_bytes: int = 256 * 2**20,
        compile_timeout: float = COMPILE_TIMEOUT,
        max_compiling: int = 4,
        sizeof: Callable[[Any], int] = lambda grammar: grammar.memory_size_bytes,
    ):
        self.maxsize = maxsize
        self.max_bytes = max_bytes
        self.compile_timeout = compile_timeout
        self.hits = 0
        self.misses = 0
        self._sizeof = sizeof
        self._items: OrderedDict[str, Any] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self._compiling = threading.BoundedSemaphore(max_compiling)

    def __len__(self) -> int:
        return len(self._items)

    @property
    def nbytes(self) -> int:
        """Memory taken by the kept grammars, in bytes."""
        return self._bytes

    def get(self, key: str, build: Callable[[], Any], param: str = SCHEMA_PARAM) -> Any:
        """Return the grammar cached under ``key``, building and caching it on a miss.

        Args:
            key: the canonical text the grammar depends on.
            build: compiles the grammar (called on a new thread).
            param: the request field the grammar comes from, for the time-limit error.

        Raises:
            InvalidRequest: from ``build``, or (with ``param``) when compiling takes longer
                than ``compile_timeout``; nothing is cached then.
            EngineUnavailable: ``max_compiling`` compilations are still running.
        """
        with self._lock:
            if key in self._items:
                self.hits += 1
                self._items.move_to_end(key)
                return self._items[key]
            self.misses += 1
        if not self._compiling.acquire(timeout=self.compile_timeout):
            raise EngineUnavailable("The grammar compiler is busy with other schemas; retry later.")
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()

        def run() -> None:
            try:
                future.set_result(build())
            except BaseException as exc:  # noqa: BLE001 (handed to the waiting caller)
                future.set_exception(exc)
            finally:
                self._compiling.release()

        threading.Thread(target=run, name="grammar-compile", daemon=True).start()
        try:
            grammar = future.result(timeout=self.compile_timeout)
        except concurrent.futures.TimeoutError:
            raise InvalidRequest(
                f"The grammar for {param} took longer than {self.compile_timeout:g} s to compile; "
                "simplify the schema (fewer or simpler 'pattern's, fewer properties).",
                param=param,
            ) from None
        self._put(key, grammar)
        return grammar

    def _put(self, key: str, grammar: Any) -> None:
        size = self._sizeof(grammar)
        if size > self.max_bytes:
            return
        with self._lock:
            if key in self._items:
                return
            self._items[key] = grammar
            self._bytes += size
            while len(self._items) > self.maxsize or self._bytes > self.max_bytes:
                _, dropped = self._items.popitem(last=False)
                self._bytes -= self._sizeof(dropped)
