"""Step 4: each query's vector (and, for BM25, its texts) searched in one batched store call.

A query with rank fusion (its collection's think policy, or its own `fusion`) is two searches of that call, the
think vector and the direct query, fused here by weighted reciprocal rank (Qdrant Edge's RRF takes no weights).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from service.clients.sparse import bm25
from service.model.documents import Hit
from service.model.search import Retrieval, SearchSpec
from service.settings import Settings
from service.store.base import Fusion, SearchQuery, Store


@dataclass(frozen=True)
class Direct:
    """The direct query beside a think query with rank fusion, and the think list's weight."""

    vector: np.ndarray
    sparse_texts: list[str]
    think_weight: float


@dataclass(frozen=True)
class Ask:
    """One query ready to search: its spec, its vector, the texts of its BM25 side, and for rank fusion the direct
    query whose list its own is fused with."""

    spec: SearchSpec
    vector: np.ndarray
    sparse_texts: list[str]
    direct: Direct | None = None


@dataclass(frozen=True)
class Found:
    hits: list[Hit]
    retrieval: Retrieval  # what answered: a collection without a sparse side answers dense whatever was asked


def weighted_rrf(lists: list[tuple[list[Hit], float]], k: int, top_k: int) -> list[Hit]:
    """Weighted reciprocal-rank fusion: score(d) = Σ w / (k + rank of d in the list), ranks from 1 (ties by id);
    a document keeps the hit of the first list that has it."""
    scores: dict[str, float] = {}
    first: dict[str, Hit] = {}
    for hits, weight in lists:
        # Equal scores ranked by id: the engine returns ties in no fixed order, and a rank is what this fuses.
        for rank, hit in enumerate(sorted(hits, key=lambda h: (-h.score, h.document.id)), start=1):
            scores[hit.document.id] = scores.get(hit.document.id, 0.0) + weight / (k + rank)
            first.setdefault(hit.document.id, hit)
    best = sorted(scores, key=lambda d: (-scores[d], d))[:top_k]
    return [Hit(first[d].document, scores[d]) for d in best]


class Retriever:
    def __init__(self, settings: Settings, store: Store) -> None:
        self.store = store
        self._fusion = Fusion(settings.search_fusion, settings.search_rrf_k, settings.search_hybrid_prefetch)
        self._rank_depth = settings.search_rank_depth

    async def search(self, collection: str, asks: list[Ask]) -> list[Found]:
        wants_sparse = any(a.spec.retrieval != "dense" for a in asks)
        sparse_side = wants_sparse and await self.store.sparse_side(collection)
        retrievals: list[Retrieval] = []
        batch: list[SearchQuery] = []
        for a in asks:
            # Unset: hybrid where the collection has a sparse side; without one, dense whatever was asked.
            retrieval: Retrieval = (a.spec.retrieval or "hybrid") if sparse_side else "dense"
            retrievals.append(retrieval)
            if a.direct is None:
                batch.append(self._query(a.spec, a.vector, a.sparse_texts, retrieval, a.spec.top_k))
            else:
                depth = max(a.spec.top_k, self._rank_depth)
                batch.append(self._query(a.spec, a.vector, a.sparse_texts, retrieval, depth))
                batch.append(self._query(a.spec, a.direct.vector, a.direct.sparse_texts, retrieval, depth))
        results = iter(await self.store.search_batch(collection, batch))
        found = []
        for a, retrieval in zip(asks, retrievals, strict=True):
            hits = next(results)
            if a.direct is not None:
                w = a.direct.think_weight
                hits = weighted_rrf([(next(results), 1 - w), (hits, w)], self._fusion.k, a.spec.top_k)
            found.append(Found(hits, retrieval))
        return found

    def _query(
        self, spec: SearchSpec, vector: np.ndarray, sparse_texts: list[str], retrieval: Retrieval, limit: int
    ) -> SearchQuery:
        # Thoughts feed the BM25 query too, in the profile's sparse form (docs/methods.md).
        sparse = bm25().query(sparse_texts) if retrieval != "dense" else None
        return SearchQuery(vector, limit, spec.filter, spec.hnsw_ef, retrieval, sparse, self._fusion)
