"""RPM/TPM windows shared by every replica, in Redis (``--redis-url``).

Usage::

    limiter = RedisRateLimiter("redis://cache.internal:6379/0")
    await limiter.admit(key)                # RateLimited(retry_after=...) when over a limit
    await limiter.record_tokens(key, 120)
    limiter.close()

The rule is :mod:`.limits`' sliding window log, kept in two sorted sets per key, scored by
Redis's own clock (``TIME``), so replicas on hosts whose clocks differ share one window:

- ``chatcap:{<key id>}:requests``: one member per admitted request;
- ``chatcap:{<key id>}:tokens``: one member ``<id>:<tokens>`` per finished request.

Each check is one Lua script, which Redis runs atomically: drop the entries older than the
window, count, and either refuse (with the wait until the window has room) or add the
request, so two replicas can never both take the last request of a minute. The braces put
both sets of a key in one Redis Cluster hash slot. The sets expire a window after their
last entry. Redis unreachable: 503 (no request goes unlimited).
"""

from __future__ import annotations

import secrets

import anyio
import redis

from mcp_server.errors import EngineUnavailable
from mcp_server.gateway.limits import WINDOW_SECONDS, rpm_exceeded, tpm_exceeded
from mcp_server.gateway.records import KeyRecord

__all__ = ["RedisRateLimiter"]

# KEYS: requests set, tokens set. ARGV: window seconds, rpm (-1: none), tpm (-1: none), member.
# Returns {0} (admitted), {1, wait} (RPM) or {2, wait, used} (TPM); waits as strings (Lua
# numbers would be truncated to integers on the way back).
_ADMIT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
local window = tonumber(ARGV[1])
local rpm, tpm = tonumber(ARGV[2]), tonumber(ARGV[3])
local start = now - window
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', start)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', start)
if rpm >= 0 then
  local n = redis.call('ZCARD', KEYS[1])
  if n >= rpm then
    local entry = redis.call('ZRANGE', KEYS[1], n - rpm, n - rpm, 'WITHSCORES')
    return {1, tostring(tonumber(entry[2]) - start)}
  end
end
if tpm >= 0 then
  local entries = redis.call('ZRANGE', KEYS[2], 0, -1, 'WITHSCORES')
  local used = 0
  for i = 1, #entries, 2 do used = used + tonumber(string.match(entries[i], ':(%d+)$')) end
  if used >= tpm then
    local left = used
    for i = 1, #entries, 2 do
      left = left - tonumber(string.match(entries[i], ':(%d+)$'))
      if left < tpm then return {2, tostring(tonumber(entries[i + 1]) - start), tostring(used)} end
    end
  end
end
redis.call('ZADD', KEYS[1], now, ARGV[4])
redis.call('PEXPIRE', KEYS[1], math.ceil(window * 1000))
return {0}
"""

# KEYS: tokens set. ARGV: window seconds, member "<id>:<tokens>".
_RECORD = """
local t = redis.call('TIME')
redis.call('ZADD', KEYS[1], tonumber(t[1]) + tonumber(t[2]) / 1e6, ARGV[2])
redis.call('PEXPIRE', KEYS[1], math.ceil(tonumber(ARGV[1]) * 1000))
return 1
"""


class RedisRateLimiter:
    """Sliding-window RPM and TPM limits shared through Redis.

    Args:
        url: a ``redis://`` or ``rediss://`` URL (``--redis-url``).
        window: the window in seconds.

    Raises:
        ValueError: the URL does not parse.
    """

    def __init__(self, url: str, window: float = WINDOW_SECONDS):
        self.window = window
        self._client = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
        self._admit = self._client.register_script(_ADMIT)
        self._record = self._client.register_script(_RECORD)

    async def admit(self, key: KeyRecord | None) -> None:
        """Count a request against its key's limits, or refuse it (one script run).

        Raises:
            RateLimited: as :meth:`RateLimiter.admit`.
            EngineUnavailable: Redis did not answer (503).
        """
        if key is None or (key.rpm is None and key.tpm is None):
            return
        args = [self.window, -1 if key.rpm is None else key.rpm, -1 if key.tpm is None else key.tpm,
                secrets.token_hex(8)]
        answer = await self._run(self._admit, _keys(key.id), args)
        if int(answer[0]) == 1:
            raise rpm_exceeded(key, float(answer[1]))
        if int(answer[0]) == 2:
            raise tpm_exceeded(key, int(answer[2]), float(answer[1]))

    async def record_tokens(self, key: KeyRecord | None, tokens: int) -> None:
        """Add a finished request's prompt plus completion tokens to its key's TPM window.

        Raises:
            EngineUnavailable: Redis did not answer (503).
        """
        if key is None or key.tpm is None or tokens <= 0:
            return
        await self._run(self._record, _keys(key.id)[1:], [self.window, f"{secrets.token_hex(8)}:{tokens}"])

    async def _run(self, script, keys: list[str], args: list) -> list:
        try:
            return await anyio.to_thread.run_sync(lambda: script(keys=keys, args=args))
        except redis.RedisError as exc:
            raise EngineUnavailable(
                f"The rate-limit store (Redis) did not answer: {type(exc).__name__}.", code="rate_limits_unavailable"
            ) from None

    def close(self) -> None:
        """Close the connections to Redis."""
        self._client.close()


def _keys(key_id: str) -> list[str]:
    return [f"chatcap:{{{key_id}}}:requests", f"chatcap:{{{key_id}}}:tokens"]
