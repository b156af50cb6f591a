"""An open collection of the Edge store: its meta.json, its live shard, and the state of a background index build.

Used on the store thread only (the shards are not shared between threads).
"""

from __future__ import annotations

import uuid
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import qdrant_edge as qe

from service.model.collections import ChunkingParams
from service.store.edge.translate import FIRST_CHUNKS, WITH_SPARSE


@dataclass
class Collection:
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
    # Tells a build of this collection from one of a collection dropped and made again under the same name.
    generation: int = field(default_factory=lambda: uuid.uuid4().int)

    @property
    def chunking(self) -> ChunkingParams | None:
        return ChunkingParams.from_meta(self.meta.get("chunking"))

    def apply(self, operation: qe.UpdateOperation, points: int = 1) -> None:
        """A write to the live shard, queued for the replay on the copy while a build runs."""
        self.shard.update(operation)
        if self.pending is not None:
            self.pending.append((operation, points))

    def count(self) -> int:
        """Documents, not points: in a chunked collection, the chunk-0 points."""
        chunked = self.chunking is not None
        return self.shard.count(qe.CountRequest(exact=True, filter=FIRST_CHUNKS if chunked else None))

    def dense_index(self) -> tuple[int, int]:
        """(points, dense vectors in the HNSW index). The engine's indexed count includes every non-empty sparse
        vector (always indexed); those are the points that have one."""
        info = self.shard.info()
        indexed = info.indexed_vectors_count
        if self.meta.get("sparse"):
            indexed -= self.shard.count(qe.CountRequest(exact=True, filter=WITH_SPARSE))
        return info.points_count, indexed

    def close(self) -> None:
        self.shard.close()
        if self.built is not None:
            self.built.close()
