"""Token buckets for rate limits: in Redis (one bucket per client, shared by every replica), with an in-process
fallback while Redis is absent or failing, so a dead Redis never turns into failed requests."""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

import redis.asyncio as redis
from cachetools import TTLCache

from service.observability import metrics

log = logging.getLogger(__name__)

# One atomic step of a token bucket. Redis' own clock (TIME), so replicas with skewed clocks agree; the key expires
# once the bucket would be full again, so idle clients cost no memory. Tokens come back as a string: Redis truncates
# Lua numbers to integers.
_TAKE = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1]) or burst
local at = tonumber(state[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - at) * rate)
local allowed = 0
if tokens >= 1 then
  tokens = tokens - 1
  allowed = 1
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
return {allowed, tostring(tokens)}
"""


@dataclass(frozen=True)
class Bucket:
    """A rate limit: `rate` tokens per second refill a bucket of `burst` tokens; a request takes one."""

    rate: float
    burst: int

    def policy(self) -> str:
        """The RateLimit-Policy value: `burst;w=seconds to refill it`."""
        return f"{self.burst};w={max(1, math.ceil(self.burst / self.rate))}"


@dataclass(frozen=True)
class Decision:
    allowed: bool
    remaining: int
    retry_after_s: int  # until one token is back (0 when allowed)
    reset_s: int  # until the bucket is full again


def _decide(bucket: Bucket, allowed: bool, tokens: float) -> Decision:
    missing_for_one = 0.0 if allowed else max(0.0, 1.0 - tokens)
    return Decision(
        allowed=allowed,
        remaining=max(0, math.floor(tokens)),
        retry_after_s=math.ceil(missing_for_one / bucket.rate) if missing_for_one else 0,
        reset_s=math.ceil((bucket.burst - tokens) / bucket.rate),
    )


class MemoryBuckets:
    """Token buckets of this process only (the fallback: each replica then enforces the limit on its own)."""

    def __init__(self, size: int = 100_000) -> None:
        # Bounded: an abusive client rotating addresses cannot grow memory without limit.
        self._state: TTLCache[str, tuple[float, float]] = TTLCache(maxsize=size, ttl=3600)

    def take(self, key: str, bucket: Bucket) -> Decision:
        now = time.monotonic()
        tokens, at = self._state.get(key, (float(bucket.burst), now))
        tokens = min(bucket.burst, tokens + max(0.0, now - at) * bucket.rate)
        allowed = tokens >= 1
        if allowed:
            tokens -= 1
        self._state[key] = (tokens, now)
        return _decide(bucket, allowed, tokens)


class RateLimiter:
    name: str

    def __init__(self, client: redis.Redis | None) -> None:
        """`client`: fail-fast (RedisPools.client), or None for this process' buckets only."""
        self._memory = MemoryBuckets()
        self._redis = client
        self._take = self._redis.register_script(_TAKE) if self._redis is not None else None
        self.name = "redis" if self._redis is not None else "memory"

    async def take(self, key: str, bucket: Bucket) -> Decision:
        if self._take is not None:
            try:
                allowed, tokens = await self._take(
                    keys=[f"thinksearch:ratelimit:v1:{key}"], args=[bucket.rate, bucket.burst]
                )
                return _decide(bucket, bool(int(allowed)), float(tokens))
            except (redis.RedisError, OSError) as exc:
                metrics.RATE_LIMIT_FALLBACKS.inc()
                log.warning("rate limiter: Redis failed (%r); using this replica's own buckets", exc)
        return self._memory.take(key, bucket)

    async def aclose(self) -> None:
        if self._redis is not None:
            await self._redis.aclose()  # closes a pool only the client owns; a shared one is closed by its owner
