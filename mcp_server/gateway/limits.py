"""Per-key rate limits: requests per minute (RPM) and tokens per minute (TPM).

Usage::

    limiter = RateLimiter()             # or RedisRateLimiter(url) (:mod:`.redis_limits`)
    await limiter.admit(key)            # RateLimited(retry_after=...) when over a limit
    ...generate...
    await limiter.record_tokens(key, 120)   # prompt + completion tokens, once the request ends

A sliding window log over the last 60 seconds per key. :class:`RateLimiter` keeps it in
this process's memory: it restarts empty with the process and is not shared, so with N
replicas behind a load balancer a key gets up to N times its limits.
:class:`~mcp_server.gateway.redis_limits.RedisRateLimiter` keeps the same windows in Redis,
shared by every replica. The rule, in both:

- RPM: a request is admitted while fewer than ``rpm`` requests were admitted in the
  window; it counts from its admission.
- TPM: a request is admitted while fewer than ``tpm`` tokens were recorded in the window.
  Token counts are known only when a request ends, so requests running together may
  exceed the limit once; later requests wait until the window has room again.

``Retry-After`` is the time until enough entries leave the window, rounded up to whole
seconds (RFC 9110 section 10.2.3).
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable

from mcp_server.errors import RateLimited
from mcp_server.gateway.records import KeyRecord

__all__ = ["WINDOW_SECONDS", "RateLimiter", "rpm_exceeded", "tpm_exceeded"]

WINDOW_SECONDS = 60.0


class RateLimiter:
    """Sliding-window RPM and TPM limits for API keys.

    Args:
        clock: monotonic seconds (tests pass a fake one).
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self._clock = clock
        self._lock = threading.Lock()
        self._requests: dict[str, deque[float]] = {}
        self._tokens: dict[str, deque[tuple[float, int]]] = {}

    async def admit(self, key: KeyRecord | None) -> None:
        """Count a request against its key's limits, or refuse it.

        Raises:
            RateLimited: the key reached its RPM or TPM limit; ``retry_after`` says when
                the window has room again. The message names the key id and the limit.
        """
        if key is None or (key.rpm is None and key.tpm is None):
            return
        with self._lock:
            now = self._clock()
            start = now - WINDOW_SECONDS
            requests = self._requests.setdefault(key.id, deque())
            while requests and requests[0] <= start:
                requests.popleft()
            tokens = self._tokens.setdefault(key.id, deque())
            while tokens and tokens[0][0] <= start:
                tokens.popleft()
            if key.rpm is not None and len(requests) >= key.rpm:
                raise rpm_exceeded(key, requests[len(requests) - key.rpm] - start)
            used = sum(n for _, n in tokens)
            if key.tpm is not None and used >= key.tpm:
                raise tpm_exceeded(key, used, _time_until_below(tokens, used, key.tpm) - start)
            requests.append(now)

    async def record_tokens(self, key: KeyRecord | None, tokens: int) -> None:
        """Add a finished request's prompt plus completion tokens to its key's TPM window."""
        if key is None or key.tpm is None or tokens <= 0:
            return
        with self._lock:
            self._tokens.setdefault(key.id, deque()).append((self._clock(), tokens))

    def close(self) -> None:
        """Nothing to release (the windows live in this object); :class:`RedisRateLimiter` closes its client."""


def rpm_exceeded(key: KeyRecord, wait: float) -> RateLimited:
    """The 429 for a key at its RPM limit; ``wait``: seconds until the window has room."""
    return RateLimited(
        f"Rate limit reached for key {key.id}: {key.rpm} requests per minute. Try again in {math.ceil(wait)} s.",
        retry_after=math.ceil(wait),
        code="rate_limit_exceeded",
    )


def tpm_exceeded(key: KeyRecord, used: int, wait: float) -> RateLimited:
    """The 429 for a key at its TPM limit (``used`` tokens in the window)."""
    return RateLimited(
        f"Rate limit reached for key {key.id}: {key.tpm} tokens per minute ({used} used). "
        f"Try again in {math.ceil(wait)} s.",
        retry_after=math.ceil(wait),
        code="rate_limit_exceeded",
    )


def _time_until_below(entries: deque[tuple[float, int]], used: int, limit: int) -> float:
    """The time stamp of the entry whose expiry brings the window's total under ``limit``."""
    for stamp, n in entries:
        used -= n
        if used < limit:
            return stamp
    return entries[-1][0]
