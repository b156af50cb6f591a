"""Collections and documents: the logic behind the collection and document routes."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from service.clients.embedder import Embedder
from service.documents.aliases import Aliases
from service.documents.chunking import Chunker
from service.documents.policies import Policies
from service.model.collections import ChunkingParams, CollectionInfo, HnswParams
from service.model.documents import DocumentIn, FilterValue, StoredDocument
from service.model.errors import AliasConflict, PolicyRejected
from service.model.policy import ThinkPolicy
from service.model.profiles import ThinkProfile
from service.observability import metrics
from service.store.base import DocumentPage, Store


class Catalog:
    def __init__(
        self,
        store: Store,
        embedder: Embedder,
        profile: ThinkProfile,
        chunker: Chunker,
        policies: Policies,
        aliases: Aliases | None = None,
    ) -> None:
        self.aliases = aliases
        self.store = store
        self.embedder = embedder
        self.profile = profile
        self.chunker = chunker
        self.policies = policies

    async def create_collection(
        self,
        name: str,
        hnsw: HnswParams | None = None,
        chunking: ChunkingParams | None = None,
        *,
        sparse: bool = True,
        policy: ThinkPolicy | None = None,
    ) -> CollectionInfo:
        if policy is not None:
            self._check(policy, self.profile.name)
        if self.aliases is not None and name in await self.aliases.table(fresh=True):
            raise AliasConflict(f"'{name}' is an alias: a collection may not take its name")
        dimension = await self.embedder.dimension()
        await self.store.create(
            name,
            dimension,
            embedder=self.embedder.name,
            profile=self.profile.name,
            hnsw=hnsw,
            chunking=chunking,
            sparse=sparse,
            policy=policy.as_meta() if policy else None,
        )
        metrics.COLLECTION_DOCUMENTS.labels(name).set(0)
        return await self.store.info(name)

    async def list_collections(self) -> list[tuple[str, int]]:
        return [(name, await self.store.count(name)) for name in await self.store.names()]

    async def describe(self, name: str) -> CollectionInfo:
        info = await self.store.info(name)
        metrics.COLLECTION_DOCUMENTS.labels(name).set(info.count)
        return info

    async def policy(self, name: str) -> dict[str, object]:
        """The collection's think policy as searches apply it (the service's defaults filled in)."""
        return self.policies.effective(await self.policies.get(name))

    async def update_policy(self, name: str, changes: dict[str, Any]) -> tuple[CollectionInfo, dict[str, object]]:
        """Fields given replace the stored ones; a field given as null goes back to the service's default.
        Returns the collection (as `describe` does) and its policy as searches now apply it."""
        info = await self.describe(name)
        policy = ThinkPolicy.from_meta(await self.store.policy(name)).updated(changes)
        self._check(policy, info.profile)
        await self.policies.set(name, policy)
        return info, self.policies.effective(policy)

    async def check_policy(self, name: str, changes: dict[str, Any]) -> None:
        """Raises PolicyRejected where `changes` could not be written to the collection's policy (nothing written)."""
        info = await self.describe(name)
        self._check(ThinkPolicy.from_meta(await self.store.policy(name)).updated(changes), info.profile)

    def _check(self, policy: ThinkPolicy, collection_profile: str) -> None:
        """A policy's profile must embed queries in the format the collection's documents were embedded in."""
        if policy.profile is None or not collection_profile:
            return
        ours = self.policies.profile(ThinkPolicy(profile=collection_profile)).document_text("{title}", "{text}")
        theirs = self.policies.profile(policy).document_text("{title}", "{text}")
        if ours != theirs:
            raise PolicyRejected(
                f"profile '{policy.profile}' formats documents differently from '{collection_profile}', the profile "
                "this collection was embedded with: re-ingest into a new collection to change it"
            )

    async def drop_collection(self, name: str, *, force: bool = False) -> None:
        """A collection that aliases point to is dropped only with `force` (its aliases go with it)."""
        pointing = await self.aliases.pointing_to(name) if self.aliases is not None else []
        if pointing and not force:
            raise AliasConflict(
                f"aliases {', '.join(pointing)} point to '{name}': move them first, or delete with ?force=true"
            )
        await self.store.drop(name)
        if pointing and self.aliases is not None:
            await self.aliases.remove(pointing)
        with contextlib.suppress(KeyError):  # no series yet for a collection made by another replica
            metrics.COLLECTION_DOCUMENTS.remove(name)

    async def upsert(self, collection: str, documents: list[DocumentIn]) -> tuple[int, int]:
        """All-or-nothing: the request was validated whole before this; one Qdrant upsert writes it (a chunked
        collection: the chunks, then the parents' chunks of earlier writes are deleted).
        Returns (documents upserted, documents truncated to the embedder's window)."""
        chunking = await self.store.chunking(collection)  # 404 before spending time on embeddings
        # Duplicate ids in one request: the last one wins.
        latest = {d.id: d for d in documents}
        docs = [StoredDocument(d.id, d.text, d.title, d.metadata) for d in latest.values()]
        prepared = await asyncio.to_thread(self.chunker.prepare, docs, chunking)
        vectors = await self.embedder.embed(prepared.texts, documents=True)
        await self.store.upsert(collection, prepared.documents, vectors)
        metrics.DOCUMENTS_UPSERTED.labels(collection).inc(len(docs))
        metrics.DOCUMENTS_TRUNCATED.labels("upsert").inc(len(prepared.truncated))
        if chunking:
            metrics.DOCUMENT_CHUNKS.labels("upsert").inc(len(prepared.documents))
        metrics.COLLECTION_DOCUMENTS.labels(collection).set(await self.store.count(collection))
        return len(docs), len(prepared.truncated)

    async def get(self, collection: str, document_id: str) -> StoredDocument | None:
        return await self.store.get(collection, document_id)

    async def delete(self, collection: str, document_id: str) -> bool:
        deleted = await self.store.delete(collection, document_id)
        if deleted:
            metrics.COLLECTION_DOCUMENTS.labels(collection).set(await self.store.count(collection))
        return deleted

    async def browse(
        self, collection: str, limit: int, cursor: str | None = None, equal: dict[str, FilterValue] | None = None
    ) -> DocumentPage:
        """A page of whole documents in a stable order (each once, chunked or not); `cursor` from the last page."""
        return await self.store.browse(collection, limit, cursor, equal)

    async def delete_where(
        self, collection: str, *, equal: dict[str, FilterValue] | None = None, ids: list[str] | None = None
    ) -> int:
        """Every document matching `equal` (non-empty), or with one of these ids, with all its chunks."""
        deleted = await self.store.delete_where(collection, equal=equal, ids=ids)
        if deleted:
            metrics.COLLECTION_DOCUMENTS.labels(collection).set(await self.store.count(collection))
        return deleted
