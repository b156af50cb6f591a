"""The store's types and its interface: what the domain hands a vector store and gets back.

Two backends give `Store`: `qdrant.VectorStore` (qdrant-client: a server or cluster, or embedded local mode) and
`edge.store.EdgeStore` (Qdrant Edge, the embedded default); `factory.open_store` picks one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Protocol

import numpy as np

from service.clients.sparse import SparseVector
from service.model.collections import ChunkingParams, CollectionInfo, HnswParams
from service.model.documents import FilterValue, Hit, StoredDocument
from service.model.search import Retrieval


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
class DocumentPage:
    """One page of a browse: whole documents (each once, chunked or not) in point-id order, and where the next page
    starts (a point id; None after the last page)."""

    documents: list[StoredDocument]
    next_cursor: str | None


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
        policy: dict[str, Any] | None = None,
    ) -> None: ...
    async def policy(self, name: str) -> dict[str, Any]:
        """The collection's think policy as stored (model/policy.py), {} when it has none."""
    async def set_policy(self, name: str, policy: dict[str, Any]) -> None: ...
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
    async def browse(
        self, name: str, limit: int, cursor: str | None = None, equal: dict[str, FilterValue] | None = None
    ) -> DocumentPage:
        """Documents matching `equal` from `cursor` on (a page's next_cursor), stable order, each document once."""
    async def delete_where(
        self, name: str, *, equal: dict[str, FilterValue] | None = None, ids: list[str] | None = None
    ) -> int:
        """Deletes the documents (all their chunks) matching `equal`, or with these ids; returns how many."""
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
