"""The embedded store on Qdrant Edge (qdrant-edge-py): Qdrant's own engine in-process, one Edge shard per collection.

Layout under the store folder (QDRANT_PATH):

    <collection>/meta.json     dimension, embedder, profile, HNSW parameters, indexed payload keys (Edge shards have
                               no collection metadata of their own) and which shard folder is live; written
                               atomically and fsynced
    <collection>/shard/        the Edge shard (segments + WAL: an update is in the WAL before `update` returns);
                               after an index build the live shard is `shard.<hex>`, named in meta.json
    <collection>/shard.<hex>/  a copy being indexed by a child process (see _build_index)

Every engine call runs on one dedicated thread: the shard is not shared between threads, and the event loop never
waits on the engine. qdrant-edge-py 0.9.0 holds the GIL for the whole of `optimize()` (an HNSW build of 100k points
takes about a minute on 2 cores), so the build runs in a child process on a copy of the shard; writes arriving
meanwhile are applied to the live shard and replayed on the copy, a slice at a time between other engine calls,
before it replaces the live one.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import shutil
import sys
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import qdrant_edge as qe

from service.clients.sparse import SPARSE_VECTOR, bm25, sparse_text
from service.model.collections import ChunkingParams, CollectionInfo, HnswParams
from service.model.documents import FilterValue, Hit, StoredDocument
from service.model.errors import CollectionExists, CollectionNotFound, StoreUnavailable, VectorMismatch
from service.store.base import SearchQuery
from service.store.layout import (
    CHUNK_KEY,
    PARENT_KEY,
    WRITE_KEY,
    base_payload,
    best_per_parent,
    chunk_point_id,
    chunked_ids,
    document_from_payload,
    effective_retrieval,
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

_META = "meta.json"
_SHARD = "shard"
_BUILD = "shard.build"  # the layout before meta.json named the live shard: still recovered
_OLD = "shard.old"
# The replay of writes made during a build runs in slices of about this long on the store thread; searches queued
# meanwhile run between slices, so none waits much longer than a slice (or the final swap) for the replay.
_REPLAY_SLICE_S = 0.05
# The copy is flushed in a slice of its own whenever more replayed points than this are unflushed (a flush costs about
# its unflushed data), and the swap (flush, point meta.json at the copy) is taken only below it.
_SWAP_UNFLUSHED_POINTS = 5_000
# When the replay's backlog has not shrunk by a tenth over this many slices (writes outpace it), writes are held
# (searches are not) until the copy has caught up and is swapped in.
_REPLAY_SLICES_BEFORE_HOLD = 40
# The child process that builds the HNSW index: low priority, so that searches keep the CPU.
_BUILD_SCRIPT = (
    "import os, sys; os.nice(10); from qdrant_edge import EdgeShard; "
    "s = EdgeShard.load(sys.argv[1]); s.optimize(); s.close()"
)


@dataclass
class _Collection:
    name: str
    folder: Path
    meta: dict[str, Any]
    shard: qe.EdgeShard
    building: bool = False
    # Writes applied while a build runs, replayed on the built copy before the swap (oldest first).
    # Each with its number of points (what it adds to the copy's next flush).
    pending: deque[tuple[qe.UpdateOperation, int]] | None = None
    build_dir: Path | None = None  # the copy being built
    built: qe.EdgeShard | None = None  # the built copy, open while the pending writes are replayed on it
    unflushed: int = 0  # points replayed on `built` since its last flush
    retired: Path | None = None  # the shard a swap replaced, deleted off the store thread
    generation: int = field(default_factory=lambda: uuid.uuid4().int)


class EdgeStore:
    """Drop-in for VectorStore (same methods, same errors) on Qdrant Edge shards under `root`."""

    def __init__(
        self, root: str | Path, *, index_threshold: int = 20_000, full_scan_threshold_kb: int = _FULL_SCAN_THRESHOLD_KB
    ) -> None:
        self._root = Path(root)
        if (self._root / _META).is_file() and (self._root / "collection").is_dir():
            # A folder written by qdrant-client's local mode (the embedded default before Edge): say so at startup
            # rather than show an empty store.
            raise RuntimeError(
                f"{self._root} holds a qdrant-client local-mode store: set QDRANT_EMBEDDED=local to serve it, "
                "or point QDRANT_PATH at another folder for Qdrant Edge"
            )
        self._root.mkdir(parents=True, exist_ok=True)
        self._index_threshold = index_threshold
        # Segments (and filtered candidate sets) under this many KB of vectors are scored exactly, index or not.
        self._full_scan_kb = full_scan_threshold_kb
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="edge-store")
        self._open: dict[str, _Collection] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        # Collections whose writes wait for a replay that they outpaced (see _replay_and_swap).
        self._write_holds: dict[str, asyncio.Event] = {}

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
    ) -> None:
        await self._call(self._create, name, dimension, embedder, profile, hnsw or DEFAULT_HNSW, sparse, chunking)

    async def sparse_side(self, name: str) -> bool:
        """Whether the collection has a BM25 vector (meta.json says; collections from before have none)."""
        collection = self._open.get(name)
        if collection is None:
            collection = await self._call(self._get, name)
        return bool(collection.meta.get("sparse"))

    async def chunking(self, name: str) -> ChunkingParams | None:
        return await self._call(lambda: _chunking(self._get(name)))

    async def exists(self, name: str) -> bool:
        return await self._call(self._exists, name)

    async def names(self) -> list[str]:
        return await self._call(lambda: sorted(p.parent.name for p in self._root.glob(f"*/{_META}")))

    async def info(self, name: str) -> CollectionInfo:
        return await self._call(self._info, name)

    async def count(self, name: str) -> int:
        return await self._call(lambda: _count(self._get(name)))

    async def drop(self, name: str) -> None:
        await self._call(self._drop, name)

    async def upsert(
        self, name: str, documents: list[StoredDocument], vectors: np.ndarray, *, replace_chunks: bool = True
    ) -> None:
        await self._writable(name)
        needs_build = await self._call(self._upsert, name, documents, vectors, replace_chunks)
        if needs_build:
            task = asyncio.create_task(self._build_index(name))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def write_batch(self, name: str, documents: list[StoredDocument], vectors: np.ndarray) -> None:
        """A bulk-ingestion batch: the same as `upsert` here (in the WAL when it returns, off the event loop)."""
        await self.upsert(name, documents, vectors)

    async def get(self, name: str, document_id: str) -> StoredDocument | None:
        records = await self._call(lambda: self._get(name).shard.retrieve([point_id(document_id)], True, False))
        return document_from_payload(records[0].payload) if records else None

    async def delete(self, name: str, document_id: str) -> bool:
        await self._writable(name)
        return await self._call(self._delete, name, document_id)

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

    async def _writable(self, name: str) -> None:
        hold = self._write_holds.get(name)
        if hold is not None:
            await hold.wait()

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
        return name in self._open or (self._folder(name) / _META).is_file()

    def _get(self, name: str) -> _Collection:
        if name in self._open:
            return self._open[name]
        folder = self._folder(name)
        if not (folder / _META).is_file():
            raise CollectionNotFound(name)
        meta = json.loads((folder / _META).read_text())
        live = _recover_swap(folder, meta.get("shard", _SHARD))
        collection = _Collection(name, folder, meta, qe.EdgeShard.load(str(folder / live)))
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
    ) -> None:
        folder = self._folder(name)
        if self._exists(name):
            raise CollectionExists(name)
        # Built aside and renamed into place: a crash never leaves a half-made collection under its name.
        staging = self._root / f".{name}.{uuid.uuid4().hex[:8]}.creating"
        config = qe.EdgeConfig(
            vectors=qe.EdgeVectorParams(size=dimension, distance=qe.Distance.Cosine),
            # IDF is the engine's: computed over the shard as it is when a query runs.
            sparse_vectors={SPARSE_VECTOR: qe.EdgeSparseVectorParams(modifier=qe.Modifier.Idf)} if sparse else None,
            hnsw_config=qe.HnswIndexConfig(
                m=hnsw.m, ef_construct=hnsw.ef_construct, full_scan_threshold=self._full_scan_kb
            ),
            # When to index is this class's choice (index_threshold, in points): a build indexes every segment.
            optimizers=qe.EdgeOptimizersConfig(indexing_threshold=1),
        )
        shard = qe.EdgeShard.create(str(staging / _SHARD), config)
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
            "shard": _SHARD,
        }
        if sparse:
            meta["sparse"] = SPARSE_VECTOR
        if chunking:
            meta["chunking"] = chunking.as_meta()
        _write_json(staging / _META, meta)
        staging.rename(folder)
        _fsync_dir(self._root)

    def _info(self, name: str) -> CollectionInfo:
        collection = self._get(name)
        meta = collection.meta
        return CollectionInfo(
            name=name,
            count=_count(collection),
            dimension=int(meta["dimension"]),
            distance=str(meta["distance"]),
            embedder=str(meta["embedder"]),
            profile=str(meta["profile"]),
            sparse=bool(meta.get("sparse")),
            chunking=_chunking(collection),
        )

    def _drop(self, name: str) -> None:
        collection = self._get(name)
        collection.shard.close()
        if collection.built is not None:
            collection.built.close()
        del self._open[name]
        # Renamed away first: the name is free at once, and a crash mid-delete leaves only a hidden folder.
        trash = self._root / f".{name}.{uuid.uuid4().hex[:8]}.dropped"
        collection.folder.rename(trash)
        _fsync_dir(self._root)
        shutil.rmtree(trash, ignore_errors=True)

    def _apply(self, collection: _Collection, operation: qe.UpdateOperation, points: int = 1) -> None:
        collection.shard.update(operation)
        if collection.pending is not None:
            collection.pending.append((operation, points))

    def _upsert(self, name: str, documents: list[StoredDocument], vectors: np.ndarray, replace_chunks: bool) -> bool:
        collection = self._get(name)
        dimension = int(collection.meta["dimension"])
        if vectors.ndim != 2 or vectors.shape[1] != dimension:
            raise VectorMismatch(f"expected vectors of dimension {dimension}, got shape {vectors.shape}")
        self._index_new_keys(collection, documents)
        sparse = bool(collection.meta.get("sparse"))
        write_id = new_write_id()
        points = [
            qe.Point(chunk_point_id(d), _vectors(d, v, sparse), _payload(d, write_id))
            for d, v in zip(documents, vectors.astype(np.float32).tolist(), strict=True)
        ]
        self._apply(collection, qe.UpdateOperation.upsert_points(points), len(points))
        parents = chunked_ids(documents) if replace_chunks else []
        if parents:  # after the new chunks are in (see layout.py)
            self._apply(collection, qe.UpdateOperation.delete_points_by_filter(_stale_chunks(parents, write_id)))
        if collection.building:
            return False
        points, indexed = _dense_index(collection)
        # Marked here, on the store thread, so that the next upsert does not start a second build.
        collection.building = points - indexed >= self._index_threshold
        return collection.building

    def _index_new_keys(self, collection: _Collection, documents: list[StoredDocument]) -> None:
        """A payload index per metadata key, made when the key first appears (its type is the first value's)."""
        indexed: dict[str, str] = collection.meta["indexed_keys"]
        new: dict[str, str] = {}
        for document in documents:
            for key, value in document.metadata.items():
                if key in indexed or key in new or len(indexed) + len(new) >= MAX_INDEXED_KEYS:
                    continue
                schema = _schema_of(value)
                if schema is not None:
                    new[key] = schema
        if not new:
            return
        for key, schema in new.items():
            # Booleans are matched on their string shadow (see _payload).
            path, schema = (f"{_BOOL}.{key}", "Keyword") if schema == "Bool" else (f"metadata.{key}", schema)
            self._apply(collection, qe.UpdateOperation.create_field_index(path, getattr(qe.PayloadSchemaType, schema)))
        indexed.update(new)
        _write_json(collection.folder / _META, collection.meta)

    def _delete(self, name: str, document_id: str) -> bool:
        collection = self._get(name)
        pid = point_id(document_id)
        if not collection.shard.retrieve([pid], False, False):
            return False
        self._apply(collection, qe.UpdateOperation.delete_points([pid]))
        if _chunking(collection):  # every chunk of it
            self._apply(collection, qe.UpdateOperation.delete_points_by_filter(_stale_chunks([document_id], "")))
        return True

    def _search_batch(self, name: str, queries: list[SearchQuery]) -> list[list[Hit]]:
        collection = self._get(name)
        if _chunking(collection):
            return self._search_groups(collection, queries)
        return self._query_batch(collection, queries)

    def _search_groups(self, collection: _Collection, queries: list[SearchQuery]) -> list[list[Hit]]:
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
        ids = parents_to_fetch(results)
        parents = {d.id: d for d in (document_from_payload(r.payload) for r in collection.shard.retrieve(ids, True, False))}
        return with_parents(results, parents)

    def _query_batch(self, collection: _Collection, queries: list[SearchQuery]) -> list[list[Hit]]:
        dimension = int(collection.meta["dimension"])
        sparse_side = bool(collection.meta.get("sparse"))
        requests = []
        for q in queries:
            if q.vector.shape != (dimension,):
                raise VectorMismatch(f"expected a query vector of dimension {dimension}, got shape {q.vector.shape}")
            requests.append(_edge_request(q, sparse_side))
        results = collection.shard.query_batch(qe.QueryBatchRequest(requests))
        return [[Hit(document_from_payload(p.payload), float(p.score)) for p in points] for points in results]

    def _close_all(self) -> None:
        for collection in self._open.values():
            collection.shard.close()
            if collection.built is not None:
                collection.built.close()
        self._open.clear()

    # --- the HNSW build, in a child process ---

    async def _build_index(self, name: str) -> None:
        try:
            again = True
            while again:  # writes that came during a build may be enough for another
                again = await self._build_once(name)
        except asyncio.CancelledError:
            await asyncio.shield(self._call(self._abandon_build, name))
            raise
        except Exception:
            log.exception("HNSW build of %s failed; the collection stays searchable by full scan", name)
            await self._call(self._abandon_build, name)

    async def _build_once(self, name: str) -> bool:
        generation, build_dir = await self._call(self._start_build, name)
        child = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            _BUILD_SCRIPT,
            str(build_dir),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            _, stderr = await child.communicate()
        except asyncio.CancelledError:
            child.kill()
            await child.wait()
            raise
        opened = await self._call(self._open_built, name, generation, child.returncode == 0, stderr.decode()[-2000:])
        return opened and await self._replay_and_swap(name, generation)

    def _start_build(self, name: str) -> tuple[int, Path]:
        collection = self._get(name)
        collection.shard.flush()
        build = collection.folder / f"{_SHARD}.{uuid.uuid4().hex[:8]}"
        live = collection.folder / collection.meta.get("shard", _SHARD)
        shutil.copytree(live, build)
        collection.build_dir = build
        collection.pending = deque()
        log.info("building the HNSW index of %s in the background", name)
        return collection.generation, build

    def _open_built(self, name: str, generation: int, ok: bool, stderr: str) -> bool:
        """Opens the built copy for the replay; False when there is nothing to swap in."""
        collection = self._open.get(name)
        if collection is None or collection.generation != generation or collection.build_dir is None:
            return False  # dropped meanwhile
        if not ok:
            log.error("HNSW build of %s failed: %s", name, stderr)
            self._abandon_build(name)
            return False
        collection.built = qe.EdgeShard.load(str(collection.build_dir))
        collection.unflushed = 0
        return True

    async def _replay_and_swap(self, name: str, generation: int) -> bool:
        """Replays the writes made during the build on the copy, one slice per store-thread call, then swaps.

        Each call is queued behind whatever searches and writes are waiting, so they run between slices. Writes keep
        arriving (and queueing for the replay) meanwhile; if they outpace it, they are held until it has caught up.
        """
        slices, window_start = 0, float("inf")
        try:
            while True:
                done, again, backlog = await self._call(self._replay_slice, name, generation)
                if done:
                    await asyncio.to_thread(self._delete_retired, name)
                    return again
                slices += 1
                if slices % _REPLAY_SLICES_BEFORE_HOLD == 1:
                    window_start = backlog
                elif (
                    slices % _REPLAY_SLICES_BEFORE_HOLD == 0
                    and backlog > 0.9 * window_start
                    and name not in self._write_holds
                ):
                    log.warning("writes to %s outpace the replay after its index build: holding them", name)
                    self._write_holds[name] = asyncio.Event()
        finally:
            hold = self._write_holds.pop(name, None)
            if hold is not None:
                hold.set()

    def _replay_slice(self, name: str, generation: int) -> tuple[bool, bool, int]:
        """One slice of the replay; (swapped or given up, another build needed, operations left to replay)."""
        collection = self._open.get(name)
        if collection is None or collection.generation != generation or collection.built is None:
            return True, False, 0
        built, pending = collection.built, collection.pending
        assert pending is not None
        if collection.unflushed > _SWAP_UNFLUSHED_POINTS:
            built.flush()  # a slice of its own, so that no flush (the swap's included) has much to write
            collection.unflushed = 0
            return False, False, len(pending)
        deadline = time.perf_counter() + _REPLAY_SLICE_S
        while pending:  # at least one operation per slice, so that the replay always advances
            operation, points = pending[0]
            built.update(operation)
            pending.popleft()  # only once applied: an engine error leaves it queued (and the build is abandoned)
            collection.unflushed += points
            if time.perf_counter() >= deadline:
                break
        if pending or collection.unflushed > _SWAP_UNFLUSHED_POINTS:
            return False, False, len(pending)
        return True, self._swap(collection), 0

    def _swap(self, collection: _Collection) -> bool:
        """Makes the caught-up copy the live shard; True when enough unindexed points came since for another build."""
        built, build_dir = collection.built, collection.build_dir
        assert built is not None and build_dir is not None
        built.flush()
        # From here the copy holds every acknowledged write. Pointing meta.json at it is the atomic step: a crash
        # before leaves the old live shard (with every write) and a leftover copy, after it the copy; opening the
        # collection deletes whichever is left over (_recover_swap).
        old = collection.folder / collection.meta.get("shard", _SHARD)
        collection.meta["shard"] = build_dir.name
        _write_json(collection.folder / _META, collection.meta)
        # The copy is the live shard before anything else can fail: an abandoned build must not delete it.
        replaced, collection.shard, collection.built, collection.build_dir = collection.shard, built, None, None
        collection.pending = None
        replaced.close()
        collection.retired = old
        points, indexed = _dense_index(collection)
        log.info("HNSW index of %s built: %d of %d points indexed", collection.name, indexed, points)
        collection.building = points - indexed >= self._index_threshold
        return collection.building

    def _delete_retired(self, name: str) -> None:
        collection = self._open.get(name)
        retired = collection.retired if collection else None
        if retired is not None:
            collection.retired = None
            shutil.rmtree(retired, ignore_errors=True)

    def _abandon_build(self, name: str) -> None:
        collection = self._open.get(name)
        if collection is not None:
            collection.building = False
            collection.pending = None
            if collection.built is not None:
                collection.built.close()
                collection.built = None
            if collection.build_dir is not None:
                shutil.rmtree(collection.build_dir, ignore_errors=True)
                collection.build_dir = None

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
            points, indexed = _dense_index(collection)
            return points, indexed, collection.shard.info().segments_count

        return await self._call(read)


# --- helpers ---


def _vectors(d: StoredDocument, dense: list[float], sparse: bool) -> Any:
    """A point's vectors; with a sparse side, also its BM25 vector from its text (here in the write path, so every
    ingestion route gets it)."""
    if not sparse:
        return dense
    if d.chunk:  # a chunked document's BM25 vector is on chunk 0 only (see qdrant._vectors)
        return {"": dense}
    vector = bm25().document(sparse_text(d.title, d.text))
    if not vector.indices:
        # No terms (stopwords only): no sparse vector at all, so that counting points with one counts the
        # sparse vectors the engine reports as indexed (_dense_index).
        return {"": dense}
    return {"": dense, SPARSE_VECTOR: qe.SparseVector(vector.indices, vector.values)}


def _dense_index(collection: _Collection) -> tuple[int, int]:
    """(points, dense vectors in the HNSW index). The engine's indexed count includes every non-empty sparse
    vector (always indexed); those are the points that have one."""
    info = collection.shard.info()
    indexed = info.indexed_vectors_count
    if collection.meta.get("sparse"):
        having = qe.Filter(must=[qe.HasVectorCondition(SPARSE_VECTOR)])
        indexed -= collection.shard.count(qe.CountRequest(exact=True, filter=having))
    return info.points_count, indexed


def _edge_request(q: SearchQuery, sparse_side: bool) -> qe.QueryRequest:
    """One query: dense nearest, sparse nearest on the BM25 vector, or both prefetched and fused by the engine
    (the same shapes as qdrant._qc_query)."""
    params = qe.SearchParams(hnsw_ef=q.hnsw_ef) if q.hnsw_ef else None
    condition = edge_filter(q.equal)
    dense = qe.Query.Nearest(q.vector.astype(np.float32).tolist())
    retrieval = effective_retrieval(q, sparse_side)
    if retrieval == "dense":
        return qe.QueryRequest(limit=q.top_k, query=dense, filter=condition, with_payload=True, params=params)
    assert q.sparse is not None
    sparse = qe.Query.Nearest(qe.SparseVector(q.sparse.indices, q.sparse.values), using=SPARSE_VECTOR)
    if retrieval == "sparse":
        return qe.QueryRequest(limit=q.top_k, query=sparse, filter=condition, with_payload=True)
    depth = max(q.fusion.prefetch, q.top_k)
    prefetches = [
        qe.Prefetch(limit=depth, query=dense, filter=condition, params=params),
        qe.Prefetch(limit=depth, query=sparse, filter=condition),
    ]
    fused = qe.Fusion.Rrf(k=q.fusion.k) if q.fusion.method == "rrf" else qe.Fusion.Dbsf()
    return qe.QueryRequest(limit=q.top_k, prefetches=prefetches, query=fused, with_payload=True)


def _engine_errors(fn: Callable[..., T], *args: Any) -> T:
    """The engine reports its failures (I/O, corrupt files, locked WAL) as plain Exception: a 503, not a 500."""
    try:
        return fn(*args)
    except OSError as exc:
        raise StoreUnavailable(f"Qdrant Edge storage failed: {exc}") from exc
    except Exception as exc:
        if type(exc) is not Exception:
            raise  # ours (CollectionNotFound, ...) or a bug (TypeError, ...): not the engine's
        log.exception("Qdrant Edge failed")
        raise StoreUnavailable(f"Qdrant Edge failed: {exc}") from exc


def _schema_of(value: Any) -> str | None:
    if isinstance(value, list):
        return _schema_of(value[0]) if value else None
    if isinstance(value, bool):
        return "Bool"
    if isinstance(value, int):
        return "Integer"
    if isinstance(value, float):
        return "Float"
    if isinstance(value, str):
        return "Keyword"
    return None


# qdrant-edge-py 0.9.0 turns MatchValue(True) into MatchValue(1) (the binding reads a bool as an int), so a
# boolean match finds nothing. Boolean metadata therefore also goes into the payload as "true"/"false" under this
# key, and boolean filters match those strings; the stored metadata itself is unchanged.
_BOOL = "_bool"


def _bool_text(value: bool) -> str:
    return "true" if value else "false"


def _chunking(collection: _Collection) -> ChunkingParams | None:
    return ChunkingParams.from_meta(collection.meta.get("chunking"))


_FIRST_CHUNKS = qe.Filter(must=[qe.FieldCondition(key=CHUNK_KEY, match=qe.MatchValue(0))])


def _count(collection: _Collection) -> int:
    """Documents, not points: in a chunked collection, the chunk-0 points."""
    chunked = _chunking(collection) is not None
    return collection.shard.count(qe.CountRequest(exact=True, filter=_FIRST_CHUNKS if chunked else None))


def _stale_chunks(parents: list[str], write_id: str) -> qe.Filter:
    return qe.Filter(
        must=[qe.FieldCondition(key=PARENT_KEY, match=qe.MatchAny(parents))],
        must_not=[qe.FieldCondition(key=WRITE_KEY, match=qe.MatchValue(write_id))],
    )


def _payload(d: StoredDocument, write_id: str = "") -> dict[str, Any]:
    payload = base_payload(d, write_id)
    shadow: dict[str, Any] = {}
    for key, value in d.metadata.items():
        if isinstance(value, bool):
            shadow[key] = _bool_text(value)
        elif isinstance(value, list) and any(isinstance(v, bool) for v in value):
            shadow[key] = [_bool_text(v) for v in value if isinstance(v, bool)]
    if shadow:
        payload[_BOOL] = shadow
    return payload


def _condition(key: str, value: FilterValue) -> Any:
    path = f"metadata.{key}"
    if isinstance(value, bool):
        return qe.FieldCondition(key=f"{_BOOL}.{key}", match=qe.MatchValue(_bool_text(value)))
    if isinstance(value, list):
        if all(isinstance(v, str) for v in value) or all(type(v) is int for v in value):
            return qe.FieldCondition(key=path, match=qe.MatchAny(value))
        return qe.Filter(should=[_condition(key, v) for v in value])
    if isinstance(value, float):
        # Qdrant matches floats by range only.
        return qe.FieldCondition(key=path, range=qe.RangeFloat(gte=value, lte=value))
    return qe.FieldCondition(key=path, match=qe.MatchValue(value))


def edge_filter(equal: dict[str, FilterValue] | None) -> qe.Filter | None:
    """The same equality / any-of semantics as qdrant.metadata_filter, in Edge's types."""
    if not equal:
        return None
    return qe.Filter(must=[_condition(k, v) for k, v in equal.items()])


def _write_json(path: Path, value: dict[str, Any]) -> None:
    """Atomic and durable: a reader sees the old file or the new one, after a crash too."""
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w") as f:
        json.dump(value, f)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _recover_swap(folder: Path, live: str) -> str:
    """Finishes or forgets a build interrupted by a crash; returns the live shard's folder name.

    meta.json names the live shard; any other shard folder is a copy whose swap never happened (or the old shard
    after one that did) and is deleted. Collections from before that pointer swapped by renames: a crash between
    `shard -> shard.old` and `shard.build -> shard` left the complete copy, which is renamed into place.
    """
    shard, build, old = folder / live, folder / _BUILD, folder / _OLD
    if live == _SHARD and not shard.exists():
        (build if build.exists() else old).rename(shard)
        _fsync_dir(folder)
    for leftover in folder.glob(f"{_SHARD}*"):
        if leftover.name != live:
            shutil.rmtree(leftover, ignore_errors=True)
    return live
