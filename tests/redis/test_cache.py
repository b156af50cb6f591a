"""The Redis thought cache against a real redis-server: identical concurrent reads share one round trip."""

from __future__ import annotations

import asyncio
import uuid

import numpy as np
import redis.asyncio as aioredis

from service.clients.breakers import Breakers
from service.redis.cache import CachedQuery, RedisThoughtCache


def gets(info: dict) -> int:
    return int(info.get("cmdstat_get", {}).get("calls", 0))


def test_a_burst_of_identical_lookups_is_one_get_and_distinct_keys_are_their_own(redis_server):
    async def run() -> tuple[int, int, list, list]:
        client = aioredis.Redis.from_url(redis_server.url)
        cache = RedisThoughtCache(client, ttl_s=60, breakers=Breakers(threshold=5, reset_s=10))
        key = f"burst:{uuid.uuid4().hex}"
        await cache.set_query(key, CachedQuery(thoughts=["a"], vector=np.ones(4, dtype=np.float32)))
        before = gets(await client.info("commandstats"))
        same = await asyncio.gather(*(cache.get_query(key) for _ in range(32)))
        middle = gets(await client.info("commandstats"))
        others = await asyncio.gather(*(cache.get_query(f"{key}:{i}") for i in range(4)))
        after = gets(await client.info("commandstats"))
        await client.aclose()
        return middle - before, after - middle, same, others

    shared, distinct, same, others = asyncio.run(run())
    assert shared == 1 and distinct == 4
    assert all(entry is not None and entry.thoughts == ["a"] for entry in same)
    assert others == [None] * 4


def test_a_cancelled_reader_does_not_cancel_the_shared_read(redis_server):
    async def run() -> list:
        client = aioredis.Redis.from_url(redis_server.url)
        cache = RedisThoughtCache(client, ttl_s=60)
        key = f"cancel:{uuid.uuid4().hex}"
        await cache.set_query(key, CachedQuery(thoughts=["b"], vector=np.ones(4, dtype=np.float32)))
        first = asyncio.ensure_future(cache.get_query(key))
        rest = [asyncio.ensure_future(cache.get_query(key)) for _ in range(3)]
        await asyncio.sleep(0)
        first.cancel()
        found = await asyncio.gather(*rest)
        await client.aclose()
        return found

    assert [e.thoughts for e in asyncio.run(run())] == [["b"]] * 3
