"""Step 4: each query's vector (and, for BM25, its texts) searched in one batched store call."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from service.clients.sparse import bm25
from service.model.documents import Hit
from service.model.profiles import ThinkProfile
from service.model.search import Retrieval, SearchSpec
from service.settings import Settings
from service.store.base import Fusion, SearchQuery, Store


@dataclass(frozen=True)
class Ask:
    """One query ready to search: its spec, its vector, and the thoughts (if any) that feed its BM25 side."""

    spec: SearchSpec
    vector: np.ndarray
    thoughts: list[str] | None = None


@dataclass(frozen=True)
class Found:
    hits: list[Hit]
    retrieval: Retrieval  # what answered: a collection without a sparse side answers dense whatever was asked


class Retriever:
    def __init__(self, settings: Settings, profile: ThinkProfile, store: Store) -> None:
        self.profile = profile
        self.store = store
        self._fusion = Fusion(settings.search_fusion, settings.search_rrf_k, settings.search_hybrid_prefetch)

    async def search(self, collection: str, asks: list[Ask]) -> list[Found]:
        wants_sparse = any(a.spec.retrieval != "dense" for a in asks)
        sparse_side = wants_sparse and await self.store.sparse_side(collection)
        retrievals: list[Retrieval] = []
        batch = []
        for a in asks:
            # Unset: hybrid where the collection has a sparse side; without one, dense whatever was asked.
            retrieval: Retrieval = (a.spec.retrieval or "hybrid") if sparse_side else "dense"
            sparse = None
            if retrieval != "dense":
                # Thoughts feed the BM25 query too, in the profile's sparse form (docs/methods.md).
                sparse = bm25().query(self.profile.sparse_texts(a.spec.query, a.thoughts))
            retrievals.append(retrieval)
            batch.append(
                SearchQuery(a.vector, a.spec.top_k, a.spec.filter, a.spec.hnsw_ef, retrieval, sparse, self._fusion)
            )
        results = await self.store.search_batch(collection, batch)
        return [Found(hits, r) for hits, r in zip(results, retrievals, strict=True)]
