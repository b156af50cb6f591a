"""Short leases in Redis (`SET NX PX`): one replica at a time does a piece of work for a key.

A lease carries its holder's random token, so only the holder can extend or release it (compare-and-set in Lua),
and it expires by itself when the holder dies. Without Redis there is one replica and nothing to arbitrate.
"""

from __future__ import annotations

import logging
import secrets
from typing import Protocol

import redis.asyncio as redis

from service.observability import metrics

log = logging.getLogger(__name__)

_EXTEND = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class LeaseUnavailable(Exception):
    """Redis could not be asked: the caller does the work itself (no arbitration beats no answer)."""


class Leases(Protocol):
    async def acquire(self, key: str, ttl_ms: int) -> str | None: ...

    async def extend(self, key: str, token: str, ttl_ms: int) -> bool: ...

    async def release(self, key: str, token: str) -> None: ...

    async def held(self, key: str) -> bool: ...

    async def aclose(self) -> None: ...


class LocalLeases:
    """One replica: every lease is granted (in-process coalescing already shares the work)."""

    async def acquire(self, key: str, ttl_ms: int) -> str | None:
        return "local"

    async def extend(self, key: str, token: str, ttl_ms: int) -> bool:
        return True

    async def release(self, key: str, token: str) -> None:
        return None

    async def held(self, key: str) -> bool:
        return False

    async def aclose(self) -> None:
        return None


class RedisLeases:
    def __init__(self, client: redis.Redis) -> None:
        self._redis = client  # fail-fast (RedisPools.client): an unanswered lease means doing the work oneself
        self._extend = self._redis.register_script(_EXTEND)
        self._release = self._redis.register_script(_RELEASE)

    async def acquire(self, key: str, ttl_ms: int) -> str | None:
        token = secrets.token_hex(8)
        try:
            return token if await self._redis.set(_name(key), token, nx=True, px=ttl_ms) else None
        except (redis.RedisError, OSError) as exc:
            metrics.THOUGHT_CACHE_ERRORS.labels("lease").inc()
            raise LeaseUnavailable(repr(exc)) from exc

    async def extend(self, key: str, token: str, ttl_ms: int) -> bool:
        try:
            return bool(await self._extend(keys=[_name(key)], args=[token, ttl_ms]))
        except (redis.RedisError, OSError):
            return False

    async def release(self, key: str, token: str) -> None:
        try:
            await self._release(keys=[_name(key)], args=[token])
        except (redis.RedisError, OSError) as exc:
            log.warning("lease release failed (it expires by itself): %r", exc)

    async def held(self, key: str) -> bool:
        try:
            return bool(await self._redis.exists(_name(key)))
        except (redis.RedisError, OSError):
            return False  # cannot tell: the waiter takes the work over

    async def aclose(self) -> None:
        await self._redis.aclose()  # closes a pool only the client owns; a shared one is closed by its owner


def _name(key: str) -> str:
    return f"{key}:lease"


def make_leases(client: redis.Redis | None) -> Leases:
    return RedisLeases(client) if client is not None else LocalLeases()
