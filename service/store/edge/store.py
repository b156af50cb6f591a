"""The embedded store on Qdrant Edge (qdrant-edge-py): Qdrant's own engine in-process, one Edge shard per collection.

Every engine call runs on one dedicated thread: the shard is not shared between threads, and the event loop never
waits on the engine. The folder layout and its crash recovery are disk.py's; the translation of our types into the
engine's is translate.py's; the HNSW index is built in the background, in a child process on a copy of the shard,
and swapped in by indexing.py.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import shutil
import uuid
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import qdrant_edge as qe

from service.clients.sparse import SPARSE_VECTOR
from service.model.collections import ChunkingParams, CollectionInfo, HnswParams
from service.model.documents import FilterValue, Hit, StoredDocument, key_problem
from service.model.errors import (
    CollectionExists,
    CollectionNotFound,
    StoreRejected,
    StoreUnavailable,
    VectorMismatch,
)
from service.store.base import DocumentPage, SearchQuery
from service.store.edge import pages, translate
from service.store.edge.collection import Collection
from service.store.edge.disk import META, SHARD, collection_names, fsync_dir, recover_swap, write_json
from service.store.edge.indexing import IndexBuilder
from service.store.layout import (
    CHUNK_KEY,
    PARENT_KEY,
    best_per_parent,
    chunked_ids,
    document_from_payload,
    new_write_id,
    parents_to_fetch,
    point_id,
    with_parents,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

# Qdrant's own defaults; full_scan_threshold is in KB of vectors: a filtered search whose candidates fit under it
# scores them exactly instead of walking the graph.
DEFAULT_HNSW = HnswParams(m=16, ef_construct=100)
_FULL_SCAN_THRESHOLD_KB = 10_000
# Qdrant Edge 0.9.0 has no group query: a search of a chunked collection fetches this many chunks per wanted
# document and keeps each parent's best (see _search_groups).
_CHUNKS_PER_DOCUMENT = 4
# Payload indexes are made for metadata keys as they first appear, up to this many per collection (metadata is
# free-form; an unbounded number of indexes would cost memory and upsert time for keys nobody filters on).
MAX_INDEXED_KEYS = 64


class EdgeStore:
    """Drop-in for VectorStore (same methods, same errors) on Qdrant Edge shards under `root`."""

    def __init__(
        self, root: str | Path, *, index_threshold: int = 20_000, full_scan_threshold_kb: int = _FULL_SCAN_THRESHOLD_KB
    ) -> None:
        self._root = Path(root)
        if (self._root / META).is_file() and (self._root / "collection").is_dir():
            # A folder written by qdrant-client's local mode (the embedded default before Edge): say so at startup
            # rather than show an empty store.
            raise RuntimeError(
                f"{self._root} holds a qdrant-client local-mode store: set QDRANT_EMBEDDED=local to serve it, "
                "or point QDRANT_PATH at another folder for Qdrant Edge"
            )
        self._root.mkdir(parents=True, exist_ok=True)
        # Segments (and filtered candidate sets) under this many KB of vectors are scored exactly, index or not.
        self._full_scan_kb = full_scan_threshold_kb
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="edge-store")
        self._open: dict[str, Collection] = {}
        self._tasks: set[asyncio.Task[None]] = set()  # the background index builds
        self._indexing = IndexBuilder(self._call, self._open, self._get, index_threshold)

    @property
    def root(self) -> Path:
        return self._root

    # --- the store interface ---

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
        hnsw = hnsw or DEFAULT_HNSW
        await self._call(self._create, name, dimension, embedder, profile, hnsw, sparse, chunking, policy or {})

    async def sparse_side(self, name: str) -> bool:
        """Whether the collection has a BM25 vector (meta.json says; collections from before have none)."""
        collection = self._open.get(name)
        if collection is None:
            collection = await self._call(self._get, name)
        return bool(collection.meta.get("sparse"))

    async def chunking(self, name: str) -> ChunkingParams | None:
        return await self._call(lambda: self._get(name).chunking)

    async def exists(self, name: str) -> bool:
        return await self._call(self._exists, name)

    async def names(self) -> list[str]:
        return await self._call(collection_names, self._root)

    async def info(self, name: str) -> CollectionInfo:
        return await self._call(self._info, name)

    async def policy(self, name: str) -> dict[str, Any]:
        return dict((await self._call(self._get, name)).meta.get("policy") or {})

    async def set_policy(self, name: str, policy: dict[str, Any]) -> None:
        def write() -> None:
            collection = self._get(name)
            collection.meta["policy"] = policy
            write_json(collection.folder / META, collection.meta)

        await self._call(write)

    async def count(self, name: str) -> int:
        return await self._call(lambda: self._get(name).count())

    async def drop(self, name: str) -> None:
        await self._call(self._drop, name)

    async def upsert(
        self, name: str, documents: list[StoredDocument], vectors: np.ndarray, *, replace_chunks: bool = True
    ) -> None:
        await self._indexing.writable(name)
        needs_build = await self._call(self._upsert, name, documents, vectors, replace_chunks)
        if needs_build:
            task = asyncio.create_task(self._indexing.build(name))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def write_batch(self, name: str, documents: list[StoredDocument], vectors: np.ndarray) -> None:
        """A bulk-ingestion batch: the same as `upsert` here (in the WAL when it returns, off the event loop)."""
        await self.upsert(name, documents, vectors)

    async def get(self, name: str, document_id: str) -> StoredDocument | None:
        records = await self._call(lambda: self._get(name).shard.retrieve([point_id(document_id)], True, False))
        return document_from_payload(records[0].payload) if records else None

    async def delete(self, name: str, document_id: str) -> bool:
        await self._indexing.writable(name)
        return await self._call(self._delete, name, document_id)

    async def browse(
        self, name: str, limit: int, cursor: str | None = None, equal: dict[str, FilterValue] | None = None
    ) -> DocumentPage:
        return await self._call(lambda: pages.page(self._get(name), limit, cursor, equal))

    async def delete_where(
        self, name: str, *, equal: dict[str, FilterValue] | None = None, ids: list[str] | None = None
    ) -> int:
        await self._indexing.writable(name)
        return await self._call(lambda: pages.delete_where(self._get(name), equal, ids))

    async def search(
        self,
        name: str,
        vector: np.ndarray,
        top_k: int,
        equal: dict[str, FilterValue] | None = None,
        *,
        hnsw_ef: int | None = None,
    ) -> list[Hit]:
        return (await self.search_batch(name, [SearchQuery(vector, top_k, equal, hnsw_ef)]))[0]

    async def search_batch(self, name: str, queries: list[SearchQuery]) -> list[list[Hit]]:
        return await self._call(self._search_batch, name, queries)

    async def ping(self) -> None:
        await self._call(self._ping)

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._call(self._close_all)
        self._executor.shutdown(wait=True)

    # --- on the store thread ---

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, _engine_errors, fn, *args)
        except RuntimeError as exc:
            if "shutdown" in str(exc):  # called after aclose
                raise StoreUnavailable("the store is closed") from exc
            raise

    def _ping(self) -> None:
        if not self._root.is_dir():
            raise StoreUnavailable(f"the store folder {self._root} is gone")

    def _folder(self, name: str) -> Path:
        if not name or name.startswith(".") or "/" in name or "\\" in name:
            raise CollectionNotFound(name)
        return self._root / name

    def _exists(self, name: str) -> bool:
        return name in self._open or (self._folder(name) / META).is_file()

    def _get(self, name: str) -> Collection:
        if name in self._open:
            return self._open[name]
        folder = self._folder(name)
        if not (folder / META).is_file():
            raise CollectionNotFound(name)
        meta = json.loads((folder / META).read_text())
        live = recover_swap(folder, meta.get("shard", SHARD))
        collection = Collection(name, folder, meta, qe.EdgeShard.load(str(folder / live)))
        self._open[name] = collection
        return collection

    def _create(
        self,
        name: str,
        dimension: int,
        embedder: str,
        profile: str,
        hnsw: HnswParams,
        sparse: bool,
        chunking: ChunkingParams | None,
        policy: dict[str, Any],
    ) -> None:
        folder = self._folder(name)
        if self._exists(name):
            raise CollectionExists(name)
        # Built aside and renamed into place: a crash never leaves a half-made collection under its name.
        staging = self._root / f".{name}.{uuid.uuid4().hex[:8]}.creating"
        config = translate.shard_config(dimension, hnsw, sparse, self._full_scan_kb)
        shard = qe.EdgeShard.create(str(staging / SHARD), config)
        if chunking:  # grouping, stale-chunk deletes and counts filter on these
            shard.update(qe.UpdateOperation.create_field_index(PARENT_KEY, qe.PayloadSchemaType.Keyword))
            shard.update(qe.UpdateOperation.create_field_index(CHUNK_KEY, qe.PayloadSchemaType.Integer))
        shard.close()
        meta = {
            "dimension": dimension,
            "distance": "cosine",
            "embedder": embedder,
            "profile": profile,
            "hnsw": {"m": hnsw.m, "ef_construct": hnsw.ef_construct},
            "indexed_keys": {},
            "shard": SHARD,
        }
        if sparse:
            meta["sparse"] = SPARSE_VECTOR
        if chunking:
            meta["chunking"] = chunking.as_meta()
        if policy:
            meta["policy"] = policy
        write_json(staging / META, meta)
        staging.rename(folder)
        fsync_dir(self._root)

    def _info(self, name: str) -> CollectionInfo:
        collection = self._get(name)
        meta = collection.meta
        return CollectionInfo(
            name=name,
            count=collection.count(),
            dimension=int(meta["dimension"]),
            distance=str(meta["distance"]),
            embedder=str(meta["embedder"]),
            profile=str(meta["profile"]),
            sparse=bool(meta.get("sparse")),
            chunking=collection.chunking,
        )

    def _drop(self, name: str) -> None:
        collection = self._get(name)
        collection.close()
        del self._open[name]
        # Renamed away first: the name is free at once, and a crash mid-delete leaves only a hidden folder.
        trash = self._root / f".{name}.{uuid.uuid4().hex[:8]}.dropped"
        collection.folder.rename(trash)
        fsync_dir(self._root)
        shutil.rmtree(trash, ignore_errors=True)

    def _upsert(self, name: str, documents: list[StoredDocument], vectors: np.ndarray, replace_chunks: bool) -> bool:
        """The write; True when it leaves enough points outside the HNSW index for a background build."""
        collection = self._get(name)
        dimension = int(collection.meta["dimension"])
        if vectors.ndim != 2 or vectors.shape[1] != dimension:
            raise VectorMismatch(f"expected vectors of dimension {dimension}, got shape {vectors.shape}")
        # A key the engine would take into the payload but not into an index (a JSON path it cannot parse) is refused
        # before anything is written: the caller's 422 must mean nothing was stored.
        for d in documents:
            for key in d.metadata:
                if problem := key_problem(key):
                    raise StoreRejected(f"metadata {problem}")
        write_id = new_write_id()
        points = translate.points(documents, vectors, write_id, bool(collection.meta.get("sparse")))
        collection.apply(qe.UpdateOperation.upsert_points(points), len(points))
        parents = chunked_ids(documents) if replace_chunks else []
        if parents:  # after the new chunks are in (see layout.py)
            collection.apply(qe.UpdateOperation.delete_points_by_filter(translate.stale_chunks(parents, write_id)))
        # Only once the write is in: a rejected one must not take index slots (MAX_INDEXED_KEYS) or fix a key's type.
        self._index_new_keys(collection, documents)
        return self._indexing.due(collection)

    def _index_new_keys(self, collection: Collection, documents: list[StoredDocument]) -> None:
        """A payload index per metadata key, made when the key first appears (its type is the first value's)."""
        indexed: dict[str, str] = collection.meta["indexed_keys"]
        new: dict[str, str] = {}
        for document in documents:
            for key, value in document.metadata.items():
                if key in indexed or key in new or len(indexed) + len(new) >= MAX_INDEXED_KEYS:
                    continue
                schema = translate.schema_of(value)
                if schema is not None:
                    new[key] = schema
        if not new:
            return
        for key, schema in new.items():
            collection.apply(translate.payload_index(key, schema))
        indexed.update(new)
        write_json(collection.folder / META, collection.meta)

    def _delete(self, name: str, document_id: str) -> bool:
        collection = self._get(name)
        pid = point_id(document_id)
        if not collection.shard.retrieve([pid], False, False):
            return False
        collection.apply(qe.UpdateOperation.delete_points([pid]))
        if collection.chunking:  # every chunk of it
            collection.apply(qe.UpdateOperation.delete_points_by_filter(translate.stale_chunks([document_id], "")))
        return True

    def _search_batch(self, name: str, queries: list[SearchQuery]) -> list[list[Hit]]:
        collection = self._get(name)
        if collection.chunking:
            return self._search_groups(collection, queries)
        return self._query_batch(collection, queries)

    def _search_groups(self, collection: Collection, queries: list[SearchQuery]) -> list[list[Hit]]:
        """Grouping emulated: over-fetch chunks, keep each parent's best. Asked again with a larger limit when too
        few distinct parents came back from a full page (a document with many close chunks), then the texts of
        parents found by a later chunk."""
        results = []
        for q in queries:
            limit = q.top_k * _CHUNKS_PER_DOCUMENT
            while True:
                hits = self._query_batch(collection, [dataclasses.replace(q, top_k=limit)])[0]
                best = best_per_parent(hits, q.top_k)
                if len(best) == q.top_k or len(hits) < limit or limit >= q.top_k * 64:
                    break
                limit *= 4
            results.append(best)
        records = collection.shard.retrieve(parents_to_fetch(results), True, False)
        parents = {d.id: d for d in (document_from_payload(r.payload) for r in records)}
        return with_parents(results, parents)

    def _query_batch(self, collection: Collection, queries: list[SearchQuery]) -> list[list[Hit]]:
        dimension = int(collection.meta["dimension"])
        sparse_side = bool(collection.meta.get("sparse"))
        requests = []
        for q in queries:
            if q.vector.shape != (dimension,):
                raise VectorMismatch(f"expected a query vector of dimension {dimension}, got shape {q.vector.shape}")
            requests.append(translate.edge_request(q, sparse_side))
        results = collection.shard.query_batch(qe.QueryBatchRequest(requests))
        return [[Hit(document_from_payload(p.payload), float(p.score)) for p in points] for points in results]

    def _close_all(self) -> None:
        for collection in self._open.values():
            collection.close()
        self._open.clear()

    # --- migration, benchmarks and tests ---

    async def export(self, name: str, batch: int = 256) -> AsyncIterator[tuple[list[StoredDocument], np.ndarray]]:
        """Every document with its vector, in batches (the migration to a server reads this)."""
        offset: Any = None
        while True:
            request = qe.ScrollRequest(offset=offset, limit=batch, with_payload=True, with_vector=True)
            records, offset = await self._call(lambda r=request: self._get(name).shard.scroll(r))
            if records:
                # A collection with a sparse side gives named vectors; the dense one is the unnamed "".
                dense = [r.vector[""] if isinstance(r.vector, dict) else r.vector for r in records]
                vectors = np.asarray(dense, dtype=np.float32)
                yield [document_from_payload(r.payload) for r in records], vectors
            if offset is None:
                return

    async def hnsw(self, name: str) -> HnswParams:
        meta = (await self._call(self._get, name)).meta["hnsw"]
        return HnswParams(m=int(meta["m"]), ef_construct=int(meta["ef_construct"]))

    async def wait_for_index(self) -> None:
        """Waits for background index builds (benchmarks and tests)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def shard_info(self, name: str) -> tuple[int, int, int]:
        """(points, indexed vectors, segments): how much of a collection the HNSW index covers."""

        def read() -> tuple[int, int, int]:
            collection = self._get(name)
            points, indexed = collection.dense_index()
            return points, indexed, collection.shard.info().segments_count

        return await self._call(read)


def _engine_errors(fn: Callable[..., T], *args: Any) -> T:
    """The engine reports its failures (I/O, corrupt files, locked WAL) as plain Exception: a 503, not a 500."""
    try:
        return fn(*args)
    except OSError as exc:
        raise StoreUnavailable(f"Qdrant Edge storage failed: {exc}") from exc
    except (ValueError, TypeError, OverflowError) as exc:
        # What the engine (or its bindings) cannot take: an invalid JSON path in a payload key or filter, a number it
        # cannot hold. The request's fault, not the store's: a 422 (or the bulk line's error), never a 503 or a 500.
        log.warning("Qdrant Edge refused a request: %r", exc)
        raise StoreRejected(f"the store refused it: {exc}"[:300]) from exc
    except Exception as exc:
        if type(exc) is not Exception:
            raise  # ours (CollectionNotFound, ...): not the engine's
        log.exception("Qdrant Edge failed")
        raise StoreUnavailable(f"Qdrant Edge failed: {exc}") from exc
