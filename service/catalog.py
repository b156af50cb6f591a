"""Collections and documents: the logic behind the collection and document routes."""

from __future__ import annotations

import contextlib

from service import metrics
from service.api.protocol import DocumentIn
from service.clients.embedder import Embedder
from service.clients.vectorstore import CollectionInfo, CollectionNotFound, HnswParams, Store, StoredDocument
from service.search.profiles import ThinkProfile


class Catalog:
    def __init__(self, store: Store, embedder: Embedder, profile: ThinkProfile) -> None:
        self.store = store
        self.embedder = embedder
        self.profile = profile

    async def create_collection(self, name: str, hnsw: HnswParams | None = None) -> CollectionInfo:
        dimension = await self.embedder.dimension()
        await self.store.create(name, dimension, embedder=self.embedder.name, profile=self.profile.name, hnsw=hnsw)
        metrics.COLLECTION_DOCUMENTS.labels(name).set(0)
        return await self.store.info(name)

    async def list_collections(self) -> list[tuple[str, int]]:
        return [(name, await self.store.count(name)) for name in await self.store.names()]

    async def describe(self, name: str) -> CollectionInfo:
        info = await self.store.info(name)
        metrics.COLLECTION_DOCUMENTS.labels(name).set(info.count)
        return info

    async def drop_collection(self, name: str) -> None:
        await self.store.drop(name)
        with contextlib.suppress(KeyError):  # no series yet for a collection made by another replica
            metrics.COLLECTION_DOCUMENTS.remove(name)

    async def upsert(self, collection: str, documents: list[DocumentIn]) -> int:
        """All-or-nothing: the request was validated whole before this; one Qdrant upsert writes it."""
        if not await self.store.exists(collection):  # 404 before spending time on embeddings
            raise CollectionNotFound(collection)
        # Duplicate ids in one request: the last one wins.
        latest = {d.id: d for d in documents}
        docs = [StoredDocument(d.id, d.text, d.title, d.metadata) for d in latest.values()]
        texts = [self.profile.document_text(d.title, d.text) for d in docs]
        vectors = await self.embedder.embed(texts, documents=True)
        await self.store.upsert(collection, docs, vectors)
        metrics.DOCUMENTS_UPSERTED.labels(collection).inc(len(docs))
        metrics.COLLECTION_DOCUMENTS.labels(collection).set(await self.store.count(collection))
        return len(docs)

    async def get(self, collection: str, document_id: str) -> StoredDocument | None:
        return await self.store.get(collection, document_id)

    async def delete(self, collection: str, document_id: str) -> bool:
        deleted = await self.store.delete(collection, document_id)
        if deleted:
            metrics.COLLECTION_DOCUMENTS.labels(collection).set(await self.store.count(collection))
        return deleted
