"""Thought cache: Redis when configured (shared by every replica), else an in-process TTL LRU.

A cache failure never fails a search: it is counted and the search goes on as a miss.
"""

from __future__ import annotations

import json
import logging
from typing import Protocol

import redis.asyncio as redis
from cachetools import TTLCache

from service import metrics

log = logging.getLogger(__name__)


class ThoughtCache(Protocol):
    name: str

    async def get(self, key: str) -> list[str] | None: ...

    async def set(self, key: str, thoughts: list[str]) -> None: ...

    async def ping(self) -> None: ...

    async def aclose(self) -> None: ...


class MemoryThoughtCache:
    name = "memory"

    def __init__(self, size: int, ttl_s: int) -> None:
        self._entries: TTLCache[str, list[str]] = TTLCache(maxsize=size, ttl=ttl_s)

    async def get(self, key: str) -> list[str] | None:
        return self._entries.get(key)

    async def set(self, key: str, thoughts: list[str]) -> None:
        self._entries[key] = thoughts

    async def ping(self) -> None:
        return None

    async def aclose(self) -> None:
        return None


class RedisThoughtCache:
    name = "redis"

    def __init__(self, url: str, ttl_s: int, timeout_s: float) -> None:
        # Short timeouts: a slow or dead Redis must cost a search milliseconds, not seconds.
        self._redis = redis.Redis.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s, health_check_interval=30
        )
        self._ttl_s = ttl_s

    async def get(self, key: str) -> list[str] | None:
        try:
            raw = await self._redis.get(key)
        except (redis.RedisError, OSError) as exc:
            metrics.THOUGHT_CACHE_ERRORS.labels("get").inc()
            log.warning("thought cache get failed: %r", exc)
            return None
        if raw is None:
            return None
        try:
            thoughts = json.loads(raw)
        except ValueError:
            metrics.THOUGHT_CACHE_ERRORS.labels("decode").inc()
            return None
        return thoughts if isinstance(thoughts, list) else None

    async def set(self, key: str, thoughts: list[str]) -> None:
        try:
            await self._redis.set(key, json.dumps(thoughts), ex=self._ttl_s)
        except (redis.RedisError, OSError) as exc:
            metrics.THOUGHT_CACHE_ERRORS.labels("set").inc()
            log.warning("thought cache set failed: %r", exc)

    async def ping(self) -> None:
        await self._redis.ping()

    async def aclose(self) -> None:
        await self._redis.aclose()


def make_thought_cache(url: str | None, *, ttl_s: int, size: int, timeout_s: float) -> ThoughtCache:
    if url:
        return RedisThoughtCache(url, ttl_s, timeout_s)
    return MemoryThoughtCache(size, ttl_s)
