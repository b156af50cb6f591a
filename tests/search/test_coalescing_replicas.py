"""Cross-replica coalescing on a real Redis: replicas share one piece of work per key through a lease, and take it
over when the holder dies without releasing it."""

from __future__ import annotations

import asyncio
import uuid

import redis.asyncio as aioredis

from service.redis.leases import RedisLeases
from service.search.coalescing import AcrossReplicas


def test_replicas_do_the_work_once_and_share_its_result(redis_server):
    async def run() -> tuple[list[tuple[str | None, bool]], int]:
        key = f"thinksearch:test:{uuid.uuid4().hex}"
        store = aioredis.Redis.from_url(redis_server.url)
        calls = 0

        async def work() -> str:
            nonlocal calls
            calls += 1
            await asyncio.sleep(0.3)  # a generation in progress
            await store.set(key, "thoughts")
            return "thoughts"

        async def result() -> str | None:
            value = await store.get(key)
            return value.decode() if value else None

        replicas = [
            AcrossReplicas(
                RedisLeases(aioredis.Redis.from_url(redis_server.url, socket_timeout=0.5, socket_connect_timeout=0.5)),
                lease_ms=1000,
                poll_s=0.02,
            )
            for _ in range(4)
        ]
        outcomes = await asyncio.gather(*(r.once(key, work, result) for r in replicas))
        await store.aclose()
        return outcomes, calls

    outcomes, calls = asyncio.run(run())
    assert calls == 1
    assert [value for value, _ in outcomes] == ["thoughts"] * 4
    assert sorted(shared for _, shared in outcomes) == [False, True, True, True]


def test_a_dead_holder_is_taken_over_when_its_lease_expires(redis_server):
    async def run() -> tuple[str | None, bool]:
        key = f"thinksearch:test:{uuid.uuid4().hex}"
        leases = RedisLeases(aioredis.Redis.from_url(redis_server.url, socket_timeout=0.5, socket_connect_timeout=0.5))
        # A replica took the lease and died: never renewed, never released.
        assert await leases.acquire(key, 400) is not None

        async def work() -> str:
            return "mine"

        async def result() -> str | None:
            return None  # the dead holder never stored anything

        outcome = await AcrossReplicas(leases, lease_ms=400, poll_s=0.02).once(key, work, result)
        await leases.aclose()
        return outcome

    assert asyncio.run(run()) == ("mine", False)


def test_without_redis_each_replica_works_alone():
    async def run() -> tuple[str | None, bool]:
        nobody = "redis://127.0.0.1:1/0"  # nothing listens on port 1
        dead = RedisLeases(aioredis.Redis.from_url(nobody, socket_timeout=0.2, socket_connect_timeout=0.2))

        async def work() -> str:
            return "own"

        async def result() -> str | None:
            return None

        outcome = await AcrossReplicas(dead, lease_ms=1000).once("k", work, result)
        await dead.aclose()
        return outcome

    assert asyncio.run(run()) == ("own", False)
