"""The vector store: Qdrant through qdrant-client (a server or cluster, or embedded local mode).

Documents keep their own ids in the payload; the Qdrant point id is a UUIDv5 of the document id, so re-sending
a document replaces it.

Chunked collections (see service/ingest/chunking.py) hold one point per chunk. Every chunk carries its parent's id
under `doc_id` (PARENT_KEY) and its index under `chunk`; chunk 0 has the document's own point id and is the only
one that stores the text, so GET returns the whole document and counting chunk-0 points counts documents. A write
tags its chunks with a write id and then deletes the parent's chunks without it, so a shorter re-sent document
leaves no stale chunks. Searches group by parent: each document once, scored by its best chunk.
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
from service.clients.sparse import SPARSE_VECTOR, SparseVector, bm25, sparse_text

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
    chunk: int | None = None  # index of this chunk of document `id` in a chunked collection; None: not chunked


@dataclass(frozen=True)
class Hit:
    document: StoredDocument
    score: float


Retrieval = Literal["dense", "sparse", "hybrid"]


@dataclass(frozen=True)
class Fusion:
    """How hybrid retrieval fuses its two candidate lists, in the engine: reciprocal-rank fusion (score
    sum of 1 / (k + rank)) or distribution-based score fusion; `prefetch` candidates from each side."""

    method: Literal["rrf", "dbsf"] = "rrf"
    k: int = 60
    prefetch: int = 100


@dataclass(frozen=True)
class SearchQuery:
    """One query of a batched search."""

    vector: np.ndarray
    top_k: int
    equal: dict[str, FilterValue] | None = None
    hnsw_ef: int | None = None  # HNSW beam width for this query (None: the engine's default)
    # "sparse" and "hybrid" need `sparse` (the BM25 query) and a collection with a sparse side.
    retrieval: Retrieval = "dense"
    sparse: SparseVector | None = None
    fusion: Fusion = Fusion()


@dataclass(frozen=True)
class ChunkingParams:
    """Per-collection chunking of long documents, fixed at creation (tokens of the embedder's tokenizer)."""

    max_tokens: int
    overlap: int

    def as_meta(self) -> dict[str, int]:
        return {"max_tokens": self.max_tokens, "overlap": self.overlap}

    @classmethod
    def from_meta(cls, value: Any) -> ChunkingParams | None:
        return cls(int(value["max_tokens"]), int(value["overlap"])) if isinstance(value, dict) else None


@dataclass(frozen=True)
class CollectionInfo:
    name: str
    count: int
    dimension: int
    distance: str
    embedder: str
    profile: str
    sparse: bool = False  # has a BM25 sparse vector beside the dense one
    chunking: ChunkingParams | None = None


@dataclass(frozen=True)
class HnswParams:
    """HNSW graph parameters of a collection, fixed at creation (Qdrant's defaults: m=16, ef_construct=100)."""

    m: int
    ef_construct: int


def point_id(document_id: str) -> str:
    return str(uuid.uuid5(_POINT_NAMESPACE, document_id))


# --- chunks: parent ids, stale-chunk cleanup, one hit per parent ---

PARENT_KEY = "doc_id"  # a document's own id; on a chunk, its parent's
CHUNK_KEY = "chunk"  # a chunk's index (0 = the point that holds the text)
WRITE_KEY = "write"  # the write that stored a chunk: older chunks of the same parent are stale


def chunk_point_id(document: StoredDocument) -> str:
    if not document.chunk:  # unchunked, or chunk 0: the document's own point id (GET and delete find it)
        return point_id(document.id)
    return str(uuid.uuid5(_POINT_NAMESPACE, f"{document.id}\x1f{document.chunk}"))


def base_payload(d: StoredDocument, write_id: str) -> dict[str, Any]:
    payload: dict[str, Any] = {PARENT_KEY: d.id, "text": d.text, "title": d.title, "metadata": d.metadata}
    if d.chunk is not None:
        payload[CHUNK_KEY] = d.chunk
        payload[WRITE_KEY] = write_id
        if d.chunk:
            payload["text"] = ""  # only chunk 0 stores the text (see the module docstring)
    return payload


def new_write_id() -> str:
    return uuid.uuid4().hex


def chunked_ids(documents: list[StoredDocument]) -> list[str]:
    """Parents written as chunks in this write: their chunks from earlier writes are deleted after it."""
    return sorted({d.id for d in documents if d.chunk is not None})


def best_per_parent(hits: list[Hit], top_k: int) -> list[Hit]:
    """Hits in score order, one per parent (its best chunk), at most top_k: Qdrant Edge has no group query."""
    seen: set[str] = set()
    best = []
    for hit in hits:
        if hit.document.id not in seen:
            seen.add(hit.document.id)
            best.append(hit)
            if len(best) == top_k:
                break
    return best


def parents_to_fetch(results: list[list[Hit]]) -> list[str]:
    """Point ids of the documents whose best hit is a chunk without the text (chunk > 0)."""
    return sorted({point_id(h.document.id) for hits in results for h in hits if h.document.chunk})


def with_parents(results: list[list[Hit]], parents: dict[str, StoredDocument]) -> list[list[Hit]]:
    """Each hit as its whole document (chunk 0's payload), keeping the chunk's score."""
    return [
        [Hit(parents.get(h.document.id, h.document) if h.document.chunk else h.document, h.score) for h in hits]
        for hits in results
    ]


def _document(payload: dict[str, Any] | None) -> StoredDocument:
    payload = payload or {}
    chunk = payload.get(CHUNK_KEY)
    return StoredDocument(
        id=payload.get(PARENT_KEY, ""),
        text=payload.get("text", ""),
        title=payload.get("title", ""),
        metadata=payload.get("metadata", {}),
        chunk=int(chunk) if chunk is not None else None,
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


def _points(
    documents: list[StoredDocument], vectors: np.ndarray, write_id: str, sparse: bool
) -> list[models.PointStruct]:
    return [
        models.PointStruct(id=chunk_point_id(d), vector=_vectors(d, v, sparse), payload=base_payload(d, write_id))
        for d, v in zip(documents, vectors, strict=True)
    ]


def _qc_sparse(vector: SparseVector) -> models.SparseVector:
    return models.SparseVector(indices=vector.indices, values=vector.values)


def effective_retrieval(query: SearchQuery, sparse_side: bool) -> Retrieval:
    """What a query gets on a collection: without a sparse side (or a sparse query), dense."""
    return query.retrieval if sparse_side and query.sparse is not None else "dense"


def _qc_query(q: SearchQuery, sparse_side: bool) -> dict[str, Any]:
    """The arguments of one query (query_points / QueryRequest share them): dense nearest, sparse nearest on the
    BM25 vector, or both prefetched and fused by the engine."""
    params = models.SearchParams(hnsw_ef=q.hnsw_ef) if q.hnsw_ef else None
    retrieval = effective_retrieval(q, sparse_side)
    if retrieval == "dense":
        return {"query": q.vector.tolist(), "params": params}
    assert q.sparse is not None
    sparse = _qc_sparse(q.sparse)
    if retrieval == "sparse":
        return {"query": sparse, "using": SPARSE_VECTOR}
    depth = max(q.fusion.prefetch, q.top_k)
    condition = metadata_filter(q.equal)  # each side filters its own candidates
    prefetch = [
        models.Prefetch(query=q.vector.tolist(), limit=depth, filter=condition, params=params),
        models.Prefetch(query=sparse, using=SPARSE_VECTOR, limit=depth, filter=condition),
    ]
    fused: models.Query = (
        models.RrfQuery(rrf=models.Rrf(k=q.fusion.k))
        if q.fusion.method == "rrf"
        else models.FusionQuery(fusion=models.Fusion.DBSF)
    )
    return {"prefetch": prefetch, "query": fused}


def _vectors(d: StoredDocument, dense: np.ndarray, sparse: bool) -> Any:
    """A point's vectors. With a sparse side, the document's BM25 vector is computed here, in the write path (every
    ingestion route comes through it), from its whole text, and put on its first (or only) point: a chunked
    document counts once in the engine's IDF, and a sparse hit is chunk 0, the point that stores the text."""
    if not sparse:
        return dense.tolist()
    if d.chunk:
        return {"": dense.tolist()}
    return {"": dense.tolist(), SPARSE_VECTOR: _qc_sparse(bm25().document(sparse_text(d.title, d.text)))}


def _stale_chunks(parents: list[str], write_id: str) -> models.FilterSelector:
    return models.FilterSelector(
        filter=models.Filter(
            must=[models.FieldCondition(key=PARENT_KEY, match=models.MatchAny(any=parents))],
            must_not=[models.FieldCondition(key=WRITE_KEY, match=models.MatchValue(value=write_id))],
        )
    )


_FIRST_CHUNKS = models.Filter(must=[models.FieldCondition(key=CHUNK_KEY, match=models.MatchValue(value=0))])


@dataclass(frozen=True)
class _Layout:
    sparse: bool  # a BM25 vector beside the dense one
    chunking: ChunkingParams | None

    @classmethod
    def of(cls, info: models.CollectionInfo) -> _Layout:
        chunking = (info.config.metadata or {}).get("chunking")
        return cls(SPARSE_VECTOR in (info.config.params.sparse_vectors or {}), ChunkingParams.from_meta(chunking))


def _group_query(q: SearchQuery, sparse_side: bool) -> dict[str, Any]:
    """`_qc_query` for query_points_groups, which names the search parameters `search_params`."""
    args = _qc_query(q, sparse_side)
    if "params" in args:
        args["search_params"] = args.pop("params")
    return args


class VectorStore:
    def __init__(self, client: AsyncQdrantClient, breakers: Breakers | None = None, *, embedded: bool = False) -> None:
        self._client = client
        self._breakers = breakers
        # qdrant-client local mode: one owning process, synchronous work inside its coroutines.
        self.embedded = embedded
        # Sparse side and chunking are fixed at creation: read once per collection (forgotten on drop).
        self._layouts: dict[str, _Layout] = {}

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
        self,
        name: str,
        dimension: int,
        *,
        embedder: str,
        profile: str,
        hnsw: HnswParams | None = None,
        sparse: bool = True,
        chunking: ChunkingParams | None = None,
    ) -> None:
        metadata: dict[str, Any] = {"embedder": embedder, "profile": profile}
        if chunking:
            metadata["chunking"] = chunking.as_meta()
        async with self._errors(name):
            if await self._client.collection_exists(name):
                raise CollectionExists(name)
            await self._client.create_collection(
                name,
                vectors_config=models.VectorParams(size=dimension, distance=models.Distance.COSINE),
                # IDF is the engine's: computed over the collection as it is when a query runs.
                sparse_vectors_config={SPARSE_VECTOR: models.SparseVectorParams(modifier=models.Modifier.IDF)}
                if sparse
                else None,
                metadata=metadata,
                hnsw_config=models.HnswConfigDiff(m=hnsw.m, ef_construct=hnsw.ef_construct) if hnsw else None,
            )
            if chunking and not self.embedded:  # grouping, stale-chunk deletes and counts filter on these (local
                # mode keeps no payload indexes)
                await self._client.create_payload_index(name, PARENT_KEY, models.PayloadSchemaType.KEYWORD)
                await self._client.create_payload_index(name, CHUNK_KEY, models.PayloadSchemaType.INTEGER)
        self._layouts[name] = _Layout(sparse, chunking)

    async def _layout(self, name: str) -> _Layout:
        """The collection's sparse side and chunking, asked of Qdrant once per collection and process."""
        layout = self._layouts.get(name)
        if layout is None:
            async with self._errors(name):
                info = await self._client.get_collection(name)
            layout = self._layouts[name] = _Layout.of(info)
        return layout

    async def sparse_side(self, name: str) -> bool:
        return (await self._layout(name)).sparse

    async def chunking(self, name: str) -> ChunkingParams | None:
        return (await self._layout(name)).chunking

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
            layout = self._layouts[name] = _Layout.of(info)  # count() reads it: no second get_collection
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
            sparse=layout.sparse,
            chunking=layout.chunking,
        )

    async def count(self, name: str) -> int:
        """Documents, not points: in a chunked collection, the chunk-0 points."""
        chunked = await self.chunking(name) is not None
        async with self._errors(name):
            return (await self._client.count(name, count_filter=_FIRST_CHUNKS if chunked else None, exact=True)).count

    async def drop(self, name: str) -> None:
        self._layouts.pop(name, None)
        async with self._errors(name):
            if not await self._client.collection_exists(name):
                raise CollectionNotFound(name)
            await self._client.delete_collection(name)

    async def upsert(
        self, name: str, documents: list[StoredDocument], vectors: np.ndarray, *, replace_chunks: bool = True
    ) -> None:
        """`replace_chunks=False`: chunks are added to their parents' (a copy that sends them in several batches)."""
        write_id = new_write_id()
        points = _points(documents, vectors, write_id, await self.sparse_side(name))
        async with self._errors(name):
            # wait=True: a 200 means stored and searchable.
            await self._client.upsert(name, points=points, wait=True)
            if replace_chunks:
                await self._delete_stale_chunks(name, documents, write_id)

    async def _delete_stale_chunks(self, name: str, documents: list[StoredDocument], write_id: str) -> None:
        """After the new chunks are in: a search never finds a re-sent document missing, nor its old chunks after."""
        parents = chunked_ids(documents)
        if parents:
            await self._client.delete(name, points_selector=_stale_chunks(parents, write_id), wait=True)

    async def write_batch(self, name: str, documents: list[StoredDocument], vectors: np.ndarray) -> None:
        """Bulk ingestion (issue 5): one confirmed (wait=true) upsert of a worker batch. Embedded mode does its work
        (SQLite commits, array growth) synchronously inside the coroutine, so there it runs on a thread of its own
        and searches on the event loop keep answering during a bulk load."""
        write_id = new_write_id()
        points = _points(documents, vectors, write_id, await self.sparse_side(name))

        async def write() -> None:
            await self._client.upsert(name, points=points, wait=True)
            await self._delete_stale_chunks(name, documents, write_id)

        async with self._errors(name):
            if self.embedded:
                await asyncio.to_thread(asyncio.run, write())
            else:
                await write()

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
                if await self.chunking(name):  # every chunk of it
                    await self._client.delete(name, points_selector=_stale_chunks([document_id], ""), wait=True)
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
        sparse_side = any(q.retrieval != "dense" for q in queries) and await self.sparse_side(name)
        if await self.chunking(name):
            return await self._search_groups(name, queries, sparse_side)
        requests = [
            models.QueryRequest(
                **_qc_query(q, sparse_side), limit=q.top_k, filter=metadata_filter(q.equal), with_payload=True
            )
            for q in queries
        ]
        async with self._errors(name):
            responses = await self._client.query_batch_points(name, requests=requests)
        return [[Hit(_document(p.payload), float(p.score)) for p in r.points] for r in responses]

    async def _search_groups(self, name: str, queries: list[SearchQuery], sparse_side: bool) -> list[list[Hit]]:
        """A chunked collection: Qdrant groups the chunks by parent (one per document, its best), one group query
        per search (qdrant-client has no batched group query); then the texts of parents found by a later chunk."""

        async def one(q: SearchQuery) -> list[Hit]:
            response = await self._client.query_points_groups(
                name,
                group_by=PARENT_KEY,
                **_group_query(q, sparse_side),
                limit=q.top_k,
                group_size=1,
                query_filter=metadata_filter(q.equal),
                with_payload=True,
            )
            return [Hit(_document(g.hits[0].payload), float(g.hits[0].score)) for g in response.groups if g.hits]

        async with self._errors(name):
            results = list(await asyncio.gather(*(one(q) for q in queries)))
            ids = parents_to_fetch(results)
            records = await self._client.retrieve(name, ids=ids, with_payload=True) if ids else []
        parents = {d.id: d for d in (_document(r.payload) for r in records)}
        return with_parents(results, parents)

    async def ping(self) -> None:
        async with self._errors(None):
            await self._client.get_collections()

    async def aclose(self) -> None:
        await self._client.close()


# --- the store interface, and the choice of backend ---


class Store(Protocol):
    """What the service needs of a vector store; VectorStore (qdrant-client) and EdgeStore (Qdrant Edge) give it."""

    async def create(
        self,
        name: str,
        dimension: int,
        *,
        embedder: str,
        profile: str,
        hnsw: HnswParams | None = None,
        sparse: bool = True,
        chunking: ChunkingParams | None = None,
    ) -> None: ...
    async def sparse_side(self, name: str) -> bool: ...
    async def chunking(self, name: str) -> ChunkingParams | None: ...
    async def exists(self, name: str) -> bool: ...
    async def names(self) -> list[str]: ...
    async def info(self, name: str) -> CollectionInfo: ...
    async def count(self, name: str) -> int: ...
    async def drop(self, name: str) -> None: ...
    async def upsert(
        self, name: str, documents: list[StoredDocument], vectors: np.ndarray, *, replace_chunks: bool = True
    ) -> None: ...
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
