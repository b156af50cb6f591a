"""A worker that died leaves its name in the consumer group; once another worker claimed its entries, the name
is forgotten, and a consumer that still holds entries never is (deleting it would drop them)."""

from __future__ import annotations

import asyncio

import redis
import redis.asyncio as aioredis

from service.ingest.redis_queue import GROUP, STREAM, RedisBroker


def _consumers(url: str) -> dict[str, int]:
    client = redis.Redis.from_url(url, decode_responses=True)
    try:
        return {c["name"]: c["pending"] for c in client.xinfo_consumers(STREAM, GROUP)}
    finally:
        client.close()


def test_a_dead_consumer_is_forgotten_only_after_its_entries_were_claimed(redis_url: str):
    async def scenario() -> None:
        client = aioredis.Redis.from_url(redis_url, decode_responses=True, socket_timeout=4, socket_connect_timeout=2)
        broker = RedisBroker(client, queue_max=1000, claim_idle_s=0.2, max_errors=10, job_ttl_s=600, forget_after_s=0.2)
        try:
            job = await broker.create_job("c")
            await broker.enqueue(job.job_id, "c", [(1, '{"id": "a", "text": "x"}'), (2, '{"id": "b", "text": "y"}')])
            assert len(await broker.read("dead", 2, block_s=0.1)) == 2  # then it "dies" holding both
            await asyncio.sleep(0.4)
            assert await broker.forget_dead_consumers() == 0  # it still holds its entries: kept
            assert _consumers(redis_url)["dead"] == 2
            claimed = await broker.read("alive", 2, block_s=0.1)  # the claim scan takes them over
            assert {e.line for e in claimed} == {1, 2}
            await asyncio.sleep(0.4)
            # The claim scan that found nothing more forgets the dead name; the live one holds entries: kept.
            await broker.read("alive", 2, block_s=0.1)
            assert _consumers(redis_url) == {"alive": 2}
            await broker.complete(claimed, {})
        finally:
            await broker.aclose()

    asyncio.run(scenario())
