"""Snapshots of Edge collections: the engine's own files, copied at one moment, and brought back by a rename.

Consistency: every engine call runs on the store's one thread (store.py), so a step there sees no write half done.
`take` runs on that thread: it flushes the live shard and copies its folder (segments, payload and vector indexes,
WAL) and the collection's meta.json at that moment; a write accepted before it is in the copy, one after it is not.
Searches and writes wait for the copy (a file copy: about 0.1 s for SciFact), not for the tar and its checksums,
which are made off the thread. qdrant-edge-py 0.9.0 has no call that writes a snapshot of a shard (its snapshot
calls unpack and apply a Qdrant server's shard snapshots), so the folder copy is it: the same step the index
builds start from (indexing.py).

Restore: the archive is verified and unpacked into a hidden folder beside the collections
(.<name>.<hex>.restoring/), the shard is opened there and its count checked against the manifest, and only then is
the folder renamed into place (after the existing collection is dropped, with replace): a restore that fails
leaves the store as it was.
"""

from __future__ import annotations

import asyncio
import copy
import json
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import qdrant_edge as qe

from service.model.errors import CollectionExists
from service.store.edge.disk import META, SHARD, fsync_dir, write_json
from service.store.edge.store import EdgeStore
from service.store.edge.translate import FIRST_CHUNKS
from service.store.snapshot_format import DATA, Manifest, SnapshotInvalid, copy_sparse, extract

BACKEND = "edge"


class EdgeSnapshots:
    backend = BACKEND

    def __init__(self, store: EdgeStore) -> None:
        # The store's thread, open collections and folder (the same hooks indexing.py is given).
        self._store = store

    async def take(self, name: str, dest: Path) -> dict[str, Any]:
        return await self._store._call(self._copy, name, dest / DATA)

    def _copy(self, name: str, data: Path) -> dict[str, Any]:
        """On the store thread: the collection's files at this moment."""
        collection = self._store._get(name)
        collection.shard.flush()
        live = collection.folder / collection.meta.get("shard", SHARD)
        shutil.copytree(live, data / SHARD, copy_function=copy_sparse)
        meta = copy.deepcopy(collection.meta)
        meta["shard"] = SHARD
        (data / META).write_text(json.dumps(meta))
        return {
            "collection": name,
            "backend": BACKEND,
            "count": collection.count(),
            "points": collection.shard.info().points_count,
            "dimension": int(meta["dimension"]),
            "distance": meta.get("distance", "cosine"),
            "embedder": meta.get("embedder", ""),
            "profile": meta.get("profile", ""),
            "sparse": bool(meta.get("sparse")),
            "chunking": meta.get("chunking"),
            "policy": meta.get("policy") or {},
            "hnsw": meta.get("hnsw"),
            "indexed_keys": meta.get("indexed_keys") or {},
        }

    async def restore(
        self, name: str, archive: Path, manifest: Manifest, *, replace: bool, progress: Callable[[str, int], None]
    ) -> int:
        store = self._store
        if not replace and await store.exists(name):
            raise CollectionExists(name)
        store._folder(name)  # a name that cannot be a folder is refused before anything is written
        staging = store._root / f".{name}.{uuid.uuid4().hex[:8]}.restoring"
        try:
            progress("unpacking", 0)
            await asyncio.to_thread(extract, archive, staging, lambda done: progress("unpacking", done))
            if not (staging / META).is_file() or not (staging / SHARD).is_dir():
                raise SnapshotInvalid("the snapshot holds no Edge collection (data/meta.json, data/shard/)")
            progress("opening", manifest.data_bytes())
            count = await store._call(self._check, staging, manifest)
            progress("swapping", manifest.data_bytes())
            await store._call(self._swap, name, staging, replace)
            return count
        finally:
            if staging.exists():
                await asyncio.to_thread(shutil.rmtree, staging, True)

    def _check(self, staging: Path, manifest: Manifest) -> int:
        """On the store thread: the unpacked shard opens and holds what the manifest says."""
        meta = json.loads((staging / META).read_text())
        meta["shard"] = SHARD
        write_json(staging / META, meta)
        try:
            shard = qe.EdgeShard.load(str(staging / SHARD))
        except Exception as exc:
            raise SnapshotInvalid(f"the snapshot's shard does not open: {exc}"[:300]) from None
        try:
            chunked = bool(meta.get("chunking"))
            count = shard.count(qe.CountRequest(exact=True, filter=FIRST_CHUNKS if chunked else None))
        finally:
            shard.close()
        if count != manifest.count:
            raise SnapshotInvalid(f"the snapshot's shard holds {count} documents, its manifest says {manifest.count}")
        return count

    def _swap(self, name: str, staging: Path, replace: bool) -> None:
        """On the store thread: the checked folder becomes the collection (the old one dropped first)."""
        store = self._store
        if store._exists(name):
            if not replace:
                raise CollectionExists(name)
            store._drop(name)
        staging.rename(store._folder(name))
        fsync_dir(store._root)
