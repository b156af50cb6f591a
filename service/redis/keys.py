"""Keys created at run time, in Redis: one hash of grants (id -> JSON, the secret only as its SHA-256 digest) and
one of last-used times, so every replica reads the same table."""

from __future__ import annotations

import json

import redis.asyncio as redis

from service.model.keys import KeyGrant

GRANTS = "thinksearch:keys:grants"
LAST_USED = "thinksearch:keys:last-used"


class KeyTable:
    def __init__(self, client: redis.Redis) -> None:
        self._redis = client

    async def add(self, grant: KeyGrant) -> None:
        await self._redis.hset(GRANTS, grant.id, json.dumps(grant.as_record()))

    async def remove(self, key_id: str) -> bool:
        async with self._redis.pipeline(transaction=True) as pipe:
            removed, _ = await pipe.hdel(GRANTS, key_id).hdel(LAST_USED, key_id).execute()
        return bool(removed)

    async def grants(self) -> list[KeyGrant]:
        """Every grant; a record that does not parse (written by hand, another version) is skipped."""
        found = []
        for raw in (await self._redis.hgetall(GRANTS)).values():
            try:
                found.append(KeyGrant.from_record(json.loads(raw)))
            except (ValueError, KeyError, TypeError):
                continue
        return found

    async def last_used(self) -> dict[str, float]:
        return {
            k.decode() if isinstance(k, bytes) else k: float(v)
            for k, v in (await self._redis.hgetall(LAST_USED)).items()
        }

    async def touch(self, times: dict[str, float]) -> None:
        if times:
            await self._redis.hset(LAST_USED, mapping={k: repr(v) for k, v in times.items()})
