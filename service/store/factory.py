"""The choice of vector-store backend, from the settings."""

from __future__ import annotations

from typing import Literal

from service.clients.breakers import Breakers
from service.store.aliases import AliasTable, FileAliases
from service.store.base import Store
from service.store.edge.store import EdgeStore
from service.store.qdrant import VectorStore

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
    return EdgeStore(path, index_threshold=edge_index_threshold)


def open_aliases(store: Store) -> AliasTable:
    """Qdrant's own aliases where the store is Qdrant (server or local mode); a file beside Edge's collections."""
    if isinstance(store, VectorStore):
        return store.aliases()
    assert isinstance(store, EdgeStore)
    return FileAliases(store.root)
