"""Aliases as every request sees them: resolved to a real collection before anything else looks at the name.

Each process re-reads the alias table at most every TTL_S, so a switch made on one replica is followed by every
replica within a second, and a request costs no store round trip for it; the replica that switched sees it at once.
"""

from __future__ import annotations

import asyncio
import time

from service.model.errors import AliasConflict, CollectionNotFound
from service.store.aliases import AliasTable
from service.store.base import Store

TTL_S = 0.5


class Aliases:
    def __init__(self, table: AliasTable, store: Store) -> None:
        self._table = table
        self._store = store
        self._cached: dict[str, str] = {}
        self._read_at = float("-inf")
        self._lock = asyncio.Lock()

    async def resolve(self, name: str) -> str:
        """The collection `name` stands for: itself, or the one its alias points to."""
        return (await self.table()).get(name, name)

    async def table(self, fresh: bool = False) -> dict[str, str]:
        if fresh or time.monotonic() - self._read_at > TTL_S:
            async with self._lock:
                if fresh or time.monotonic() - self._read_at > TTL_S:
                    self._cached = await self._table.all()
                    self._read_at = time.monotonic()
        return self._cached

    async def pointing_to(self, collection: str) -> list[str]:
        return sorted(a for a, c in (await self.table(fresh=True)).items() if c == collection)

    async def put(self, alias: str, collection: str) -> None:
        """Creates or moves `alias`. An alias never shadows a collection and never points to another alias."""
        table = await self.table(fresh=True)
        # (A Qdrant server answers "exists" for its aliases too: an alias being moved is not a collection.)
        if alias not in table and await self._store.exists(alias):
            raise AliasConflict(f"'{alias}' is a collection: an alias may not shadow it")
        if collection in table:
            raise AliasConflict(f"'{collection}' is an alias: point '{alias}' at a collection")
        if not await self._store.exists(collection):
            raise CollectionNotFound(collection)
        await self._table.put(alias, collection)
        await self.table(fresh=True)

    async def remove(self, aliases: list[str]) -> None:
        await self._table.remove(aliases)
        await self.table(fresh=True)
