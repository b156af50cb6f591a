"""The BM25 side of the store, on each backend: Qdrant Edge, qdrant-client local mode, and a Qdrant server (the
test-only stand-in over real HTTP)."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
import qdrant_edge as qe

from service.clients.sparse import SPARSE_VECTOR, bm25, sparse_text
from service.model.documents import StoredDocument
from service.store.base import Fusion, SearchQuery
from service.store.edge.store import EdgeStore
from service.store.qdrant import VectorStore

DIM = 8
TEXTS = [
    ("Tides", "The moon's gravity raises the ocean tides twice a day."),
    ("", "Photosynthesis turns sunlight into chemical energy in plants."),
    ("Vitamins", "Vitamin B12 deficiency raises blood homocysteine levels."),
    ("", "The stock market fell after the central bank raised interest rates."),
    ("Oceans", "Ocean currents carry heat from the tropics towards the poles."),
    ("", "Plants need sunlight, water and carbon dioxide to grow."),
    ("", "the of and"),  # stopwords only: no terms, no sparse vector
]


def run(coro):
    return asyncio.run(coro)


def corpus(texts, seed=0):
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((len(texts), DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    docs = [StoredDocument(f"d{i}", text, title, {"n": i}) for i, (title, text) in enumerate(texts)]
    return docs, vectors


@pytest.fixture(scope="module")
def server():
    from tests.support.qdrant_standin import QdrantStandin

    with QdrantStandin(":memory:") as qdrant:
        yield qdrant


@pytest.fixture(params=["edge", "local", "server"])
def open_store(request, tmp_path):
    """A function that opens a fresh store on the backend (each in the event loop that uses it)."""

    def make():
        if request.param == "edge":
            return EdgeStore(tmp_path)
        if request.param == "local":
            return VectorStore.connect(url=None, api_key=None, path=":memory:", timeout_s=10)
        url = request.getfixturevalue("server").url
        return VectorStore.connect(url=url, api_key=None, path="", timeout_s=10)

    make.backend = request.param
    return make


def sparse_query(text: str, top_k: int = 10, **kw) -> SearchQuery:
    return SearchQuery(np.zeros(DIM, np.float32), top_k, retrieval="sparse", sparse=bm25().query([text]), **kw)


def test_query_weights_are_term_counts_from_the_document_tokenizer():
    encoder = bm25()
    text = "Vitamin B12 deficiency raises blood homocysteine levels."
    document = encoder.document(text)
    query = encoder.query([text])
    # The same tokenizer both ways: the same terms, whatever the weights.
    assert query.indices == sorted(document.indices)
    assert sorted(qe.Bm25().embed_query(text).indices) == query.indices
    assert set(query.values) == {1.0}
    # Repeats count (Query2doc's sparse query repeats the query five times): per-term weight = occurrences.
    repeated = encoder.query([text] * 5 + ["blood pressure"])
    weights = dict(zip(repeated.indices, repeated.values, strict=True))
    blood = encoder.query(["blood"]).indices[0]
    pressure = encoder.query(["pressure"]).indices[0]
    assert weights[blood] == 6.0 and weights[pressure] == 1.0
    assert encoder.query(["the of and"]).indices == []


def test_sparse_vectors_are_computed_in_the_write_path_as_at_query_time(tmp_path):
    """The vector stored at ingest is the encoder's document vector of `title + " " + text`."""
    docs, vectors = corpus(TEXTS)

    async def scenario():
        store = EdgeStore(tmp_path)
        await store.create("c", DIM, embedder="e", profile="p")
        await store.upsert("c", docs, vectors)
        shard = store._open["c"].shard
        records = await store._call(lambda: shard.retrieve([r for r in map(_pid, docs)], False, True))
        await store.aclose()
        return records

    records = run(scenario())
    by_id = {str(r.id): r.vector for r in records}
    for d in docs:
        stored = by_id[_pid(d)]
        expected = bm25().document(sparse_text(d.title, d.text))
        if not expected.indices:
            assert not isinstance(stored, dict) or SPARSE_VECTOR not in stored
            continue
        assert (stored[SPARSE_VECTOR].indices, stored[SPARSE_VECTOR].values) == (expected.indices, expected.values)


def _pid(d: StoredDocument) -> str:
    from service.store.qdrant import point_id

    return point_id(d.id)


def test_idf_is_the_engines_and_follows_the_collection(open_store):
    """A term's weight falls as more documents contain it, with no document re-written: IDF is computed by the
    engine over the collection as it is at query time."""
    docs, vectors = corpus(TEXTS)
    more, more_vectors = corpus([("", f"Tides and gravity note {i}.") for i in range(20)], seed=1)
    more = [StoredDocument(f"m{i}", d.text, d.title, d.metadata) for i, d in enumerate(more)]

    async def scenario():
        store = open_store()
        await store.create("c", DIM, embedder="e", profile="p")
        await store.upsert("c", docs, vectors)
        (before,) = await store.search_batch("c", [sparse_query("tides")])
        await store.upsert("c", more, more_vectors)
        (after,) = await store.search_batch("c", [sparse_query("tides", top_k=30)])
        await store.drop("c")
        await store.aclose()
        return before, after

    before, after = run(scenario())
    assert [h.document.id for h in before] == ["d0"]
    score = {h.document.id: h.score for h in after}
    assert len(score) == 21
    assert 0 < score["d0"] < before[0].score


@pytest.mark.parametrize("method", ["rrf", "dbsf"])
def test_hybrid_is_the_fusion_of_the_dense_and_sparse_lists(open_store, method):
    """The engine's hybrid answer equals a fusion of the two lists computed here: RRF (score = sum over lists of
    1 / (k + rank), ranks from 0 as Qdrant counts them) or DBSF (each list's scores normalised to its mean ± 3
    sample standard deviations, then added)."""
    docs, vectors = corpus(TEXTS * 3, seed=2)
    docs = [StoredDocument(f"d{i}", d.text, d.title, d.metadata) for i, d in enumerate(docs)]
    rng = np.random.default_rng(3)
    query_vector = rng.standard_normal(DIM).astype(np.float32)
    text = "sunlight plants ocean tides"
    sparse = bm25().query([text])
    fusion = Fusion(method, k=10, prefetch=8)

    async def scenario():
        store = open_store()
        await store.create("c", DIM, embedder="e", profile="p")
        await store.upsert("c", docs, vectors)
        lists = await store.search_batch(
            "c",
            [
                SearchQuery(query_vector, 8),
                SearchQuery(query_vector, 8, retrieval="sparse", sparse=sparse),
                SearchQuery(query_vector, 5, retrieval="hybrid", sparse=sparse, fusion=fusion),
            ],
        )
        await store.drop("c")
        await store.aclose()
        return lists

    dense, sparse_hits, hybrid = run(scenario())
    assert len(dense) == 8 and 0 < len(sparse_hits) <= 8
    expected: dict[str, float] = {}
    for hits in (dense, sparse_hits):
        scores = np.array([h.score for h in hits])
        for rank, h in enumerate(hits):
            if method == "rrf":
                part = 1 / (fusion.k + rank)
            else:
                mean, sd = scores.mean(), scores.std(ddof=1)
                low, high = mean - 3 * sd, mean + 3 * sd
                part = (h.score - low) / (high - low) if high > low else 0.5
            expected[h.document.id] = expected.get(h.document.id, 0.0) + part
    got = {h.document.id: h.score for h in hybrid}
    assert len(hybrid) == 5
    for doc_id, score in got.items():
        assert score == pytest.approx(expected[doc_id], rel=1e-4, abs=1e-6)
    # The top five of the fused list (ties may come in either order).
    top = sorted(expected.values(), reverse=True)[:5]
    assert sorted(got.values(), reverse=True) == pytest.approx(top, rel=1e-4, abs=1e-6)


def test_a_collection_without_a_sparse_side_answers_dense(open_store):
    docs, vectors = corpus(TEXTS)

    async def scenario():
        store = open_store()
        await store.create("c", DIM, embedder="e", profile="p", sparse=False)
        await store.upsert("c", docs, vectors)
        side = await store.sparse_side("c")
        info = await store.info("c")
        dense, asked_hybrid, asked_sparse = await store.search_batch(
            "c",
            [
                SearchQuery(vectors[2], 3),
                SearchQuery(vectors[2], 3, retrieval="hybrid", sparse=bm25().query(["tides"])),
                SearchQuery(vectors[2], 3, retrieval="sparse", sparse=bm25().query(["tides"])),
            ],
        )
        await store.drop("c")
        await store.aclose()
        return side, info, dense, asked_hybrid, asked_sparse

    side, info, dense, asked_hybrid, asked_sparse = run(scenario())
    assert side is False and info.sparse is False
    assert dense[0].document.id == "d2"
    ids = [(h.document.id, round(h.score, 5)) for h in dense]
    assert [(h.document.id, round(h.score, 5)) for h in asked_hybrid] == ids
    assert [(h.document.id, round(h.score, 5)) for h in asked_sparse] == ids
