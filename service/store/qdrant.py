"""The vector store on qdrant-client: a Qdrant server or cluster, or embedded local mode.

The point and chunk layout is service/store/layout.py, shared with the Edge backend.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np
from qdrant_client import AsyncQdrantClient, models
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

from service.clients.breakers import Breakers, CircuitOpen
from service.clients.sparse import SPARSE_VECTOR, SparseVector, bm25, sparse_text
from service.model.collections import ChunkingParams, CollectionInfo, HnswParams
from service.model.documents import FilterValue, Hit, StoredDocument
from service.model.errors import (
    CollectionExists,
    CollectionNotFound,
    StoreRejected,
    StoreUnavailable,
    VectorMismatch,
)
from service.store import qdrant_pages
from service.store.base import DocumentPage, SearchQuery
from service.store.layout import (
    CHUNK_KEY,
    PARENT_KEY,
    WRITE_KEY,
    base_payload,
    chunk_point_id,
    chunked_ids,
    document_from_payload,
    effective_retrieval,
    new_write_id,
    parents_to_fetch,
    point_id,
    with_parents,
)
from service.store.qdrant_aliases import QdrantAliases
from service.store.qdrant_filters import metadata_filter


def _points(
    documents: list[StoredDocument], vectors: np.ndarray, write_id: str, sparse: bool
) -> list[models.PointStruct]:
    return [
        models.PointStruct(id=chunk_point_id(d), vector=_vectors(d, v, sparse), payload=base_payload(d, write_id))
        for d, v in zip(documents, vectors, strict=True)
    ]


def _qc_sparse(vector: SparseVector) -> models.SparseVector:
    return models.SparseVector(indices=vector.indices, values=vector.values)



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

    def aliases(self) -> QdrantAliases:
        return QdrantAliases(self._client, self._errors)

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
        policy: dict[str, Any] | None = None,
    ) -> None:
        metadata: dict[str, Any] = {"embedder": embedder, "profile": profile}
        if chunking:
            metadata["chunking"] = chunking.as_meta()
        if policy:
            metadata["policy"] = policy
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

    async def policy(self, name: str) -> dict[str, Any]:
        async with self._errors(name):
            info = await self._client.get_collection(name)
        return dict((info.config.metadata or {}).get("policy") or {})

    async def set_policy(self, name: str, policy: dict[str, Any]) -> None:
        async with self._errors(name):
            if not await self._client.collection_exists(name):
                raise CollectionNotFound(name)
            # Qdrant merges collection metadata by key: `policy` is replaced whole, the rest stays.
            await self._client.update_collection(name, metadata={"policy": policy})

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
        return document_from_payload(points[0].payload) if points else None

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

    async def browse(
        self, name: str, limit: int, cursor: str | None = None, equal: dict[str, FilterValue] | None = None
    ) -> DocumentPage:
        chunked = await self.chunking(name) is not None
        async with self._errors(name):
            return await qdrant_pages.page(self._client, name, limit, cursor, equal, chunked=chunked)

    async def delete_where(
        self, name: str, *, equal: dict[str, FilterValue] | None = None, ids: list[str] | None = None
    ) -> int:
        chunked = await self.chunking(name) is not None
        async with self._errors(name):
            return await qdrant_pages.delete_where(self._client, name, equal, ids, chunked=chunked)

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
        return [Hit(document_from_payload(p.payload), float(p.score)) for p in response.points]

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
        return [[Hit(document_from_payload(p.payload), float(p.score)) for p in r.points] for r in responses]

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
            best = [g.hits[0] for g in response.groups if g.hits]
            return [Hit(document_from_payload(h.payload), float(h.score)) for h in best]

        async with self._errors(name):
            results = list(await asyncio.gather(*(one(q) for q in queries)))
            ids = parents_to_fetch(results)
            records = await self._client.retrieve(name, ids=ids, with_payload=True) if ids else []
        parents = {d.id: d for d in (document_from_payload(r.payload) for r in records)}
        return with_parents(results, parents)

    async def ping(self) -> None:
        async with self._errors(None):
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
        if 400 <= exc.status_code < 500 and exc.status_code not in (408, 429):
            # The request's fault (a filter or payload Qdrant cannot take): never a sign the server is unwell.
            raise StoreRejected(f"Qdrant refused it ({exc.status_code}): {_reason(exc)}") from exc
        raise StoreUnavailable(f"Qdrant answered {exc.status_code}") from exc
    except (ValueError, AssertionError, TypeError, OverflowError) as exc:
        text = str(exc)
        if "not found" in text and "Collection" in text:
            raise CollectionNotFound(name) from exc
        if "dim" in text.lower() or "shape" in text.lower():
            raise VectorMismatch(text) from exc
        # Local mode, or the client building its request: what it cannot take is the request's fault too.
        raise StoreRejected(f"the store refused it: {text}"[:300]) from exc
    except (ResponseHandlingException, httpx.HTTPError, ConnectionError, TimeoutError) as exc:
        raise StoreUnavailable(f"Qdrant unreachable: {exc!r}") from exc


def _reason(exc: UnexpectedResponse) -> str:
    """Qdrant's own words for a refused request (its JSON `status.error`), short."""
    try:
        reason = exc.structured().get("status", {}).get("error")
    except Exception:
        reason = None
    return str(reason or exc.reason_phrase)[:200]
