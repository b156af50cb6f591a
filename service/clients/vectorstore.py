"""The vector store: Qdrant through qdrant-client (a server or cluster, or embedded local mode).

Documents keep their own ids in the payload; the Qdrant point id is a UUIDv5 of the document id, so re-sending
a document replaces it.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np
from qdrant_client import AsyncQdrantClient, models
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

_POINT_NAMESPACE = uuid.UUID("6f1f2b9e-3c55-4d8a-9a43-2f6c1d0e8b71")

MetadataValue = str | int | float | bool
FilterValue = MetadataValue | list[MetadataValue]


class StoreUnavailable(Exception):
    """Qdrant is unreachable or failing: answer 503."""


class CollectionNotFound(Exception):
    pass


class CollectionExists(Exception):
    pass


class VectorMismatch(Exception):
    """The vector does not fit the collection (it was built with another embedder)."""


@dataclass(frozen=True)
class StoredDocument:
    id: str
    text: str
    title: str
    metadata: dict[str, Any]


@dataclass(frozen=True)
class Hit:
    document: StoredDocument
    score: float


@dataclass(frozen=True)
class CollectionInfo:
    name: str
    count: int
    dimension: int
    distance: str
    embedder: str
    profile: str


def point_id(document_id: str) -> str:
    return str(uuid.uuid5(_POINT_NAMESPACE, document_id))


def _document(payload: dict[str, Any] | None) -> StoredDocument:
    payload = payload or {}
    return StoredDocument(
        id=payload.get("doc_id", ""),
        text=payload.get("text", ""),
        title=payload.get("title", ""),
        metadata=payload.get("metadata", {}),
    )


def _condition(key: str, value: FilterValue) -> models.Condition:
    field = f"metadata.{key}"
    if isinstance(value, list):
        if all(isinstance(v, str) for v in value) or all(type(v) is int for v in value):
            return models.FieldCondition(key=field, match=models.MatchAny(any=value))  # type: ignore[arg-type]
        return models.Filter(should=[_condition(key, v) for v in value])
    if isinstance(value, float):
        # Qdrant matches floats by range only.
        return models.FieldCondition(key=field, range=models.Range(gte=value, lte=value))
    return models.FieldCondition(key=field, match=models.MatchValue(value=value))


def metadata_filter(equal: dict[str, FilterValue] | None) -> models.Filter | None:
    if not equal:
        return None
    return models.Filter(must=[_condition(k, v) for k, v in equal.items()])


def _points(documents: list[StoredDocument], vectors: np.ndarray) -> list[models.PointStruct]:
    return [
        models.PointStruct(
            id=point_id(d.id),
            vector=v.tolist(),
            payload={"doc_id": d.id, "text": d.text, "title": d.title, "metadata": d.metadata},
        )
        for d, v in zip(documents, vectors, strict=True)
    ]


class VectorStore:
    def __init__(self, client: AsyncQdrantClient, *, embedded: bool = False) -> None:
        self._client = client
        # qdrant-client local mode: one owning process, synchronous work inside its coroutines.
        self.embedded = embedded

    @classmethod
    def connect(cls, *, url: str | None, api_key: str | None, path: str, timeout_s: float) -> VectorStore:
        if url:
            return cls(AsyncQdrantClient(url=url, api_key=api_key, timeout=int(timeout_s)))
        if path == ":memory:":
            return cls(AsyncQdrantClient(location=":memory:"), embedded=True)
        return cls(AsyncQdrantClient(path=path), embedded=True)

    async def create(self, name: str, dimension: int, *, embedder: str, profile: str) -> None:
        async with _translated_errors(name):
            if await self._client.collection_exists(name):
                raise CollectionExists(name)
            await self._client.create_collection(
                name,
                vectors_config=models.VectorParams(size=dimension, distance=models.Distance.COSINE),
                metadata={"embedder": embedder, "profile": profile},
            )

    async def exists(self, name: str) -> bool:
        async with _translated_errors(name):
            return await self._client.collection_exists(name)

    async def names(self) -> list[str]:
        async with _translated_errors(None):
            response = await self._client.get_collections()
        return sorted(c.name for c in response.collections)

    async def info(self, name: str) -> CollectionInfo:
        async with _translated_errors(name):
            info = await self._client.get_collection(name)
            count = await self.count(name)
        params = info.config.params.vectors
        assert isinstance(params, models.VectorParams)
        meta = info.config.metadata or {}
        return CollectionInfo(
            name=name,
            count=count,
            dimension=params.size,
            distance=params.distance.value.lower(),
            embedder=str(meta.get("embedder", "")),
            profile=str(meta.get("profile", "")),
        )

    async def count(self, name: str) -> int:
        async with _translated_errors(name):
            return (await self._client.count(name, exact=True)).count

    async def drop(self, name: str) -> None:
        async with _translated_errors(name):
            if not await self._client.collection_exists(name):
                raise CollectionNotFound(name)
            await self._client.delete_collection(name)

    async def upsert(self, name: str, documents: list[StoredDocument], vectors: np.ndarray) -> None:
        points = _points(documents, vectors)
        async with _translated_errors(name):
            # wait=True: a 200 means stored and searchable.
            await self._client.upsert(name, points=points, wait=True)

    async def write_batch(self, name: str, documents: list[StoredDocument], vectors: np.ndarray) -> None:
        """Bulk ingestion (issue 5): one confirmed (wait=true) upsert of a worker batch. Embedded mode does its work
        (SQLite commits, array growth) synchronously inside the coroutine, so there it runs on a thread of its own
        and searches on the event loop keep answering during a bulk load."""
        points = _points(documents, vectors)
        async with _translated_errors(name):
            if self.embedded:
                await asyncio.to_thread(asyncio.run, self._client.upsert(name, points=points, wait=True))
            else:
                await self._client.upsert(name, points=points, wait=True)

    async def get(self, name: str, document_id: str) -> StoredDocument | None:
        async with _translated_errors(name):
            points = await self._client.retrieve(name, ids=[point_id(document_id)], with_payload=True)
        return _document(points[0].payload) if points else None

    async def delete(self, name: str, document_id: str) -> bool:
        async with _translated_errors(name):
            found = await self._client.retrieve(name, ids=[point_id(document_id)], with_payload=False)
            if found:
                await self._client.delete(
                    name, points_selector=models.PointIdsList(points=[point_id(document_id)]), wait=True
                )
        return bool(found)

    async def search(
        self, name: str, vector: np.ndarray, top_k: int, equal: dict[str, FilterValue] | None = None
    ) -> list[Hit]:
        async with _translated_errors(name):
            response = await self._client.query_points(
                name, query=vector.tolist(), limit=top_k, query_filter=metadata_filter(equal), with_payload=True
            )
        return [Hit(_document(p.payload), float(p.score)) for p in response.points]

    async def ping(self) -> None:
        async with _translated_errors(None):
            await self._client.get_collections()

    async def aclose(self) -> None:
        await self._client.close()


@asynccontextmanager
async def _translated_errors(name: str | None) -> AsyncIterator[None]:
    """Maps qdrant-client's errors (server and local mode differ) onto the store's own."""
    try:
        yield
    except UnexpectedResponse as exc:
        if exc.status_code == 404:
            raise CollectionNotFound(name) from exc
        if exc.status_code == 400 and "dimension" in str(exc).lower():
            raise VectorMismatch(str(exc)) from exc
        raise StoreUnavailable(f"Qdrant answered {exc.status_code}") from exc
    except (ValueError, AssertionError) as exc:
        text = str(exc)
        if "not found" in text and "Collection" in text:
            raise CollectionNotFound(name) from exc
        if "dim" in text.lower() or "shape" in text.lower():
            raise VectorMismatch(text) from exc
        raise
    except (ResponseHandlingException, httpx.HTTPError, ConnectionError, TimeoutError) as exc:
        raise StoreUnavailable(f"Qdrant unreachable: {exc!r}") from exc

