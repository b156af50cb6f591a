"""Thought cache: Redis when configured (shared by every replica), else an in-process TTL LRU.

Two kinds of entry: the thoughts of a query (key: everything that shapes the thoughts), and the finished query
vector with its thoughts (key: that plus what shapes the vector), so a repeated think search embeds nothing.
A cache failure never fails a search: it is counted and the search goes on as a miss.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import redis.asyncio as redis
from cachetools import TTLCache

from service.clients.breakers import Breakers, CircuitOpen
from service.observability import metrics

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CachedQuery:
    """A think query ready to search: its thoughts and the fused query vector."""

    thoughts: list[str]
    vector: np.ndarray

    def encode(self) -> str:
        vector = np.ascontiguousarray(self.vector, dtype=np.float32)
        return json.dumps({"thoughts": self.thoughts, "vector": base64.b64encode(vector.tobytes()).decode()})

    @classmethod
    def decode(cls, raw: str | bytes) -> CachedQuery | None:
        try:
            data = json.loads(raw)
            vector = np.frombuffer(base64.b64decode(data["vector"]), dtype=np.float32)
            thoughts = data["thoughts"]
        except (ValueError, KeyError, TypeError):
            return None
        return cls(thoughts, vector) if isinstance(thoughts, list) else None


class ThoughtCache(Protocol):
    name: str

    async def get(self, key: str) -> list[str] | None: ...

    async def set(self, key: str, thoughts: list[str]) -> None: ...

    async def get_query(self, key: str) -> CachedQuery | None: ...

    async def set_query(self, key: str, entry: CachedQuery) -> None: ...

    async def ping(self) -> None: ...

    async def aclose(self) -> None: ...


class MemoryThoughtCache:
    name = "memory"

    def __init__(self, size: int, ttl_s: int) -> None:
        self._entries: TTLCache[str, list[str] | CachedQuery] = TTLCache(maxsize=size, ttl=ttl_s)

    async def get(self, key: str) -> list[str] | None:
        entry = self._entries.get(key)
        return entry if isinstance(entry, list) else None

    async def set(self, key: str, thoughts: list[str]) -> None:
        self._entries[key] = thoughts

    async def get_query(self, key: str) -> CachedQuery | None:
        entry = self._entries.get(key)
        return entry if isinstance(entry, CachedQuery) else None

    async def set_query(self, key: str, entry: CachedQuery) -> None:
        self._entries[key] = entry

    async def ping(self) -> None:
        return None

    async def aclose(self) -> None:
        return None


class RedisThoughtCache:
    name = "redis"

    def __init__(self, client: redis.Redis, ttl_s: int, breakers: Breakers | None = None) -> None:
        # A fail-fast client (RedisPools.client): a slow or dead Redis must cost a search milliseconds, not seconds.
        self._redis = client
        self._ttl_s = ttl_s
        self._breakers = breakers
        # Reads of a key in flight: identical concurrent lookups (a burst of one cold query) share one round trip,
        # so a stalled moment costs one timeout against the breaker, not one per waiting search.
        self._reads: dict[str, asyncio.Future[bytes | None]] = {}

    def _breaker(self) -> contextlib.AbstractAsyncContextManager[None]:
        # Once Redis has failed repeatedly it is not asked for a while: a dead Redis costs nothing, not a timeout.
        if self._breakers is None:
            return contextlib.nullcontext()
        return self._breakers.guard("redis", failures=(redis.RedisError, OSError))

    async def get(self, key: str) -> list[str] | None:
        raw = await self._get_raw(key)
        if raw is None:
            return None
        try:
            thoughts = json.loads(raw)
        except ValueError:
            thoughts = None
        if not isinstance(thoughts, list):
            metrics.THOUGHT_CACHE_ERRORS.labels("decode").inc()
            return None
        return thoughts

    async def set(self, key: str, thoughts: list[str]) -> None:
        await self._set_raw(key, json.dumps(thoughts))

    async def get_query(self, key: str) -> CachedQuery | None:
        raw = await self._get_raw(key)
        if raw is None:
            return None
        entry = CachedQuery.decode(raw)
        if entry is None:
            metrics.THOUGHT_CACHE_ERRORS.labels("decode").inc()
        return entry

    async def set_query(self, key: str, entry: CachedQuery) -> None:
        await self._set_raw(key, entry.encode())

    async def _get_raw(self, key: str) -> bytes | None:
        read = self._reads.get(key)
        if read is None or read.get_loop() is not asyncio.get_running_loop():
            read = self._reads[key] = asyncio.ensure_future(self._read(key))
            read.add_done_callback(lambda done: self._reads.pop(key, None) if self._reads.get(key) is done else None)
        return await asyncio.shield(read)  # one caller cancelled does not cancel the others' read

    async def _read(self, key: str) -> bytes | None:
        try:
            async with self._breaker():
                return await self._redis.get(key)
        except CircuitOpen:
            metrics.THOUGHT_CACHE_ERRORS.labels("circuit_open").inc()
            return None
        except (redis.RedisError, OSError) as exc:
            metrics.THOUGHT_CACHE_ERRORS.labels("get").inc()
            log.warning("thought cache get failed: %r", exc)
            return None

    async def _set_raw(self, key: str, value: str) -> None:
        try:
            async with self._breaker():
                await self._redis.set(key, value, ex=self._ttl_s)
        except CircuitOpen:
            metrics.THOUGHT_CACHE_ERRORS.labels("circuit_open").inc()
        except (redis.RedisError, OSError) as exc:
            metrics.THOUGHT_CACHE_ERRORS.labels("set").inc()
            log.warning("thought cache set failed: %r", exc)

    async def ping(self) -> None:
        async with self._breaker():  # a readiness probe is also the half-open probe
            await self._redis.ping()

    async def aclose(self) -> None:
        await self._redis.aclose()  # closes a pool only the client owns; a shared one is closed by its owner


def make_thought_cache(
    client: redis.Redis | None, *, ttl_s: int, size: int, breakers: Breakers | None = None
) -> ThoughtCache:
    if client is not None:
        return RedisThoughtCache(client, ttl_s, breakers)
    return MemoryThoughtCache(size, ttl_s)
