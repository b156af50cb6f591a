"""Qdrant's own aliases (a server, or qdrant-client's local mode), behind the store's error translation."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager

from qdrant_client import AsyncQdrantClient, models


class QdrantAliases:
    def __init__(self, client: AsyncQdrantClient, errors: Callable[[str | None], AbstractAsyncContextManager[None]]):
        self._client = client
        self._errors = errors

    async def all(self) -> dict[str, str]:
        async with self._errors(None):
            found = await self._client.get_aliases()
        return {a.alias_name: a.collection_name for a in found.aliases}

    async def put(self, alias: str, collection: str) -> None:
        operations: list[models.AliasOperations] = []
        if alias in await self.all():  # moved: delete and create in one request, which Qdrant applies atomically
            operations.append(models.DeleteAliasOperation(delete_alias=models.DeleteAlias(alias_name=alias)))
        operations.append(
            models.CreateAliasOperation(create_alias=models.CreateAlias(collection_name=collection, alias_name=alias))
        )
        async with self._errors(None):
            await self._client.update_collection_aliases(change_aliases_operations=operations)

    async def remove(self, aliases: list[str]) -> None:
        present = [a for a in aliases if a in await self.all()]
        if not present:
            return
        operations = [models.DeleteAliasOperation(delete_alias=models.DeleteAlias(alias_name=a)) for a in present]
        async with self._errors(None):
            await self._client.update_collection_aliases(change_aliases_operations=operations)
