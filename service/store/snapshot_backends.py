"""Which snapshot backend a store has: Edge's files, a Qdrant server's snapshot API, or none (local mode)."""

from __future__ import annotations

from service.store.base import Store
from service.store.edge.snapshots import EdgeSnapshots
from service.store.edge.store import EdgeStore
from service.store.qdrant import VectorStore
from service.store.qdrant_snapshots import ServerSnapshots
from service.store.snapshot_format import SnapshotBackend


def snapshot_backend(store: Store, *, url: str | None, api_key: str | None) -> SnapshotBackend | None:
    if isinstance(store, EdgeStore):
        return EdgeSnapshots(store)
    if isinstance(store, VectorStore) and url and not store.embedded:
        return ServerSnapshots(store, url, api_key)
    return None  # qdrant-client's local mode keeps no snapshots
