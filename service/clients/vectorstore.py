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
from typing import Any, Literal, Protocol

import httpx
import numpy as np
from qdrant_client import AsyncQdrantClient, models
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

from service.clients.breakers import Breakers, CircuitOpen

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
class SearchQuery:
    """One query of a batched search."""

    vector: np.ndarray
    top_k: int
    equal: dict[str, FilterValue] | None = None
    hnsw_ef: int | None = None  # HNSW beam width for this query (None: the engine's default)


@dataclass(frozen=True)
class CollectionInfo:
    name: str
    count: int
    dimension: int
    distance: str
    embedder: str
    profile: str


@dataclass(frozen=True)
class HnswParams:
    """HNSW graph parameters of a collection, fixed at creation (Qdrant's defaults: m=16, ef_construct=100)."""

    m: int
    ef_construct: int


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
    def __init__(self, client: AsyncQdrantClient, breakers: Breakers | None = None, *, embedded: bool = False) -> None:
        self._client = client
        self._breakers = breakers
        # qdrant-client local mode: one owning process, synchronous work inside its coroutines.
        self.embedded = embedded

    @asynccontextmanager
    async def _errors(self, name: str | None) -> AsyncIterator[None]:
        """The store's own errors; on a server, behind a circuit breaker: once Qdrant has failed repeatedly, calls
        fail at once (503) for a while instead of each waiting for a timeout."""
        if self._breakers is None:
            async with _translated_errors(name):
                yield
            return
        try:
            async with self._breakers.guard("vector_store", failures=(StoreUnavailable,)), _translated_errors(name):
                yield
        except CircuitOpen as exc:
            raise StoreUnavailable(str(exc)) from exc

    @classmethod
    def connect(
        cls, *, url: str | None, api_key: str | None, path: str, timeout_s: float, breakers: Breakers | None = None
    ) -> VectorStore:
        if url:
            return cls(AsyncQdrantClient(url=url, api_key=api_key, timeout=int(timeout_s)), breakers)
        if path == ":memory:":
            return cls(AsyncQdrantClient(location=":memory:"), embedded=True)
        return cls(AsyncQdrantClient(path=path), embedded=True)

    async def create(
        self, name: str, dimension: int, *, embedder: str, profile: str, hnsw: HnswParams | None = None
    ) -> None:
        async with self._errors(name):
            if await self._client.collection_exists(name):
                raise CollectionExists(name)
            await self._client.create_collection(
                name,
                vectors_config=models.VectorParams(size=dimension, distance=models.Distance.COSINE),
                metadata={"embedder": embedder, "profile": profile},
                hnsw_config=models.HnswConfigDiff(m=hnsw.m, ef_construct=hnsw.ef_construct) if hnsw else None,
            )

    async def exists(self, name: str) -> bool:
        async with self._errors(name):
            return await self._client.collection_exists(name)

    async def names(self) -> list[str]:
        async with self._errors(None):
            response = await self._client.get_collections()
        return sorted(c.name for c in response.collections)

    async def info(self, name: str) -> CollectionInfo:
        async with self._errors(name):
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
        async with self._errors(name):
            return (await self._client.count(name, exact=True)).count

    async def drop(self, name: str) -> None:
        async with self._errors(name):
            if not await self._client.collection_exists(name):
                raise CollectionNotFound(name)
            await self._client.delete_collection(name)

    async def upsert(self, name: str, documents: list[StoredDocument], vectors: np.ndarray) -> None:
        points = _points(documents, vectors)
        async with self._errors(name):
            # wait=True: a 200 means stored and searchable.
            await self._client.upsert(name, points=points, wait=True)

    async def write_batch(self, name: str, documents: list[StoredDocument], vectors: np.ndarray) -> None:
        """Bulk ingestion (issue 5): one confirmed (wait=true) upsert of a worker batch. Embedded mode does its work
        (SQLite commits, array growth) synchronously inside the coroutine, so there it runs on a thread of its own
        and searches on the event loop keep answering during a bulk load."""
        points = _points(documents, vectors)
        async with self._errors(name):
            if self.embedded:
                await asyncio.to_thread(asyncio.run, self._client.upsert(name, points=points, wait=True))
            else:
                await self._client.upsert(name, points=points, wait=True)

    async def get(self, name: str, document_id: str) -> StoredDocument | None:
        async with self._errors(name):
            points = await self._client.retrieve(name, ids=[point_id(document_id)], with_payload=True)
        return _document(points[0].payload) if points else None

    async def delete(self, name: str, document_id: str) -> bool:
        async with self._errors(name):
            found = await self._client.retrieve(name, ids=[point_id(document_id)], with_payload=False)
            if found:
                await self._client.delete(
                    name, points_selector=models.PointIdsList(points=[point_id(document_id)]), wait=True
                )
        return bool(found)

    async def search(
        self,
        name: str,
        vector: np.ndarray,
        top_k: int,
        equal: dict[str, FilterValue] | None = None,
        *,
        hnsw_ef: int | None = None,
    ) -> list[Hit]:
        async with self._errors(name):
            response = await self._client.query_points(
                name,
                query=vector.tolist(),
                limit=top_k,
                query_filter=metadata_filter(equal),
                with_payload=True,
                search_params=models.SearchParams(hnsw_ef=hnsw_ef) if hnsw_ef else None,
            )
        return [Hit(_document(p.payload), float(p.score)) for p in response.points]

    async def search_batch(self, name: str, queries: list[SearchQuery]) -> list[list[Hit]]:
        """Many searches in one Qdrant call; results in the order of `queries`."""
        if not queries:
            return []
        requests = [
            models.QueryRequest(
                query=q.vector.tolist(),
                limit=q.top_k,
                filter=metadata_filter(q.equal),
                params=models.SearchParams(hnsw_ef=q.hnsw_ef) if q.hnsw_ef else None,
                with_payload=True,
            )
            for q in queries
        ]
        async with self._errors(name):
            responses = await self._client.query_batch_points(name, requests=requests)
        return [[Hit(_document(p.payload), float(p.score)) for p in r.points] for r in responses]

    async def ping(self) -> None:
        async with self._errors(None):
            await self._client.get_collections()

    async def aclose(self) -> None:
        await self._client.close()


# --- the store interface, and the choice of backend ---


class Store(Protocol):
    """What the service needs of a vector store; VectorStore (qdrant-client) and EdgeStore (Qdrant Edge) give it."""

    async def create(
        self, name: str, dimension: int, *, embedder: str, profile: str, hnsw: HnswParams | None = None
    ) -> None: ...
    async def exists(self, name: str) -> bool: ...
    async def names(self) -> list[str]: ...
    async def info(self, name: str) -> CollectionInfo: ...
    async def count(self, name: str) -> int: ...
    async def drop(self, name: str) -> None: ...
    async def upsert(self, name: str, documents: list[StoredDocument], vectors: np.ndarray) -> None: ...
    async def write_batch(self, name: str, documents: list[StoredDocument], vectors: np.ndarray) -> None: ...
    async def get(self, name: str, document_id: str) -> StoredDocument | None: ...
    async def delete(self, name: str, document_id: str) -> bool: ...
    async def search(
        self,
        name: str,
        vector: np.ndarray,
        top_k: int,
        equal: dict[str, FilterValue] | None = None,
        *,
        hnsw_ef: int | None = None,
    ) -> list[Hit]: ...
    async def search_batch(self, name: str, queries: list[SearchQuery]) -> list[list[Hit]]: ...
    async def ping(self) -> None: ...
    async def aclose(self) -> None: ...


EmbeddedBackend = Literal["edge", "local"]


def open_store(
    *,
    url: str | None,
    api_key: str | None,
    path: str,
    timeout_s: float,
    embedded: EmbeddedBackend = "edge",
    edge_index_threshold: int = 20_000,
    breakers: Breakers | None = None,
) -> Store:
    """A server when `url` is set; else the embedded backend in `path`. `:memory:` is always qdrant-client's
    in-memory mode: Edge keeps its shards on disk and has no in-memory mode."""
    if url or path == ":memory:" or embedded == "local":
        return VectorStore.connect(url=url, api_key=api_key, path=path, timeout_s=timeout_s, breakers=breakers)
    from service.clients.edge_store import EdgeStore  # imports this module: imported here, not at the top

    return EdgeStore(path, index_threshold=edge_index_threshold)


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
