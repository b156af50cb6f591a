"""What a store refuses because of the request itself is the caller's fault: StoreRejected (a 422), never
StoreUnavailable (a 503), and never a failure counted by the store's circuit breaker."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from service.clients.breakers import Breakers
from service.model.documents import StoredDocument
from service.model.errors import StoreRejected
from service.store.base import SearchQuery
from service.store.edge.store import EdgeStore
from service.store.qdrant import VectorStore
from tests.support.qdrant_standin import QdrantStandin

VECTOR = np.array([1.0, 0.0, 0.0, 0.0], dtype=np.float32)


async def _refusals(store, breakers: Breakers | None) -> list[str]:
    await store.create("c", 4, embedder="e", profile="hyde", sparse=False)
    await store.upsert("c", [StoredDocument("d1", "text", "", {"k": "v"})], VECTOR[None, :])
    seen = []
    for _ in range(8):  # past any breaker threshold
        with pytest.raises(StoreRejected) as refused:
            await store.search_batch("c", [SearchQuery(VECTOR, 3, {"a[": "x"})])
        seen.append(str(refused.value))
    if breakers is not None:
        assert breakers.state("vector_store") == "closed"
    # The store still answers, and nothing stored changed.
    (hits,) = await store.search_batch("c", [SearchQuery(VECTOR, 3, {"k": "v"})])
    assert [h.document.id for h in hits] == ["d1"]
    assert await store.count("c") == 1
    return seen


def test_a_filter_the_server_cannot_read_is_refused_without_opening_the_breaker():
    breakers = Breakers(threshold=2, reset_s=60)

    async def run(url: str) -> list[str]:
        store = VectorStore.connect(url=url, api_key=None, path="", timeout_s=10, breakers=breakers)
        try:
            return await _refusals(store, breakers)
        finally:
            await store.aclose()

    with QdrantStandin() as qdrant:
        reasons = asyncio.run(run(qdrant.url))
    assert all("400" in r for r in reasons), reasons


def test_edge_refuses_a_payload_key_or_filter_it_cannot_take_and_keeps_serving(tmp_path):
    async def run() -> None:
        store = EdgeStore(tmp_path)
        try:
            await _refusals(store, None)
            for metadata in ({"a[": "v"}, {"x": float("inf")}):
                with pytest.raises(StoreRejected):
                    await store.upsert("c", [StoredDocument("p1", "poison", "", metadata)], VECTOR[None, :])
                assert await store.get("c", "p1") is None  # refused means not stored
            with pytest.raises(StoreRejected):  # past 64 bits: the engine's filter cannot hold it
                await store.search_batch("c", [SearchQuery(VECTOR, 3, {"n": 2**70})])
            assert await store.get("c", "d1") is not None
            assert await store.count("c") == 1
        finally:
            await store.aclose()

    asyncio.run(run())
