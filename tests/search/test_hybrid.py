"""Search modes through the REST API: dense, sparse (BM25) and hybrid (both, fused in the engine), on Qdrant Edge and
qdrant-client's local mode; batch and streaming; collections without a sparse side; thoughts feeding BM25."""

from __future__ import annotations

import asyncio
import json
import uuid

import numpy as np
import pytest

from service.redis.cache import CachedQuery
from service.settings import Settings
from tests.support.gateway import Gateway
from tests.support.servers import free_port

DOCS = [
    {"id": "tides", "title": "Tides", "text": "The moon's gravity raises the ocean tides twice a day."},
    {"id": "plants", "text": "Photosynthesis turns sunlight into chemical energy in green plants."},
    {"id": "b12", "title": "Vitamins", "text": "Vitamin B12 deficiency raises blood homocysteine levels."},
    {"id": "rates", "text": "The stock market fell after the central bank raised interest rates."},
    {"id": "zymurgy", "text": "Zymurgy is the chemistry of fermentation in brewing."},
    {"id": "currents", "title": "Oceans", "text": "Ocean currents carry heat from the tropics to the poles."},
]


@pytest.fixture(scope="module", params=["edge", "local"])
def gw(request, tmp_path_factory):
    path = str(tmp_path_factory.mktemp("store")) if request.param == "edge" else ":memory:"
    settings = Settings(_env_file=None, qdrant_embedded=request.param, qdrant_path=path)
    with Gateway(settings) as gateway:
        yield gateway


def make_collection(gw: Gateway, **options) -> str:
    name = f"h_{uuid.uuid4().hex[:8]}"
    created = gw.client.post("/v1/collections", json={"name": name, **options})
    assert created.status_code == 201, created.text
    assert gw.client.post(f"/v1/collections/{name}/documents", json={"documents": DOCS}).status_code == 200
    return name


def search(gw: Gateway, name: str, query: str, **extra) -> dict:
    r = gw.client.post(f"/v1/collections/{name}/search", json={"query": query, **extra})
    assert r.status_code == 200, r.text
    return r.json()


def ranked(body: dict) -> list[tuple[str, float]]:
    return [(h["id"], round(h["score"], 5)) for h in body["results"]]


def test_new_collections_have_a_sparse_side_and_search_hybrid_by_default(gw):
    name = make_collection(gw)
    assert gw.client.get(f"/v1/collections/{name}").json()["sparse"] is True
    default = search(gw, name, "zymurgy", top_k=6)
    assert default["retrieval"] == "hybrid"
    assert ranked(default) == ranked(search(gw, name, "zymurgy", top_k=6, retrieval="hybrid"))
    sparse = search(gw, name, "zymurgy", retrieval="sparse")
    # BM25 matches the rare term only; dense ranks every document.
    assert sparse["retrieval"] == "sparse" and [h["id"] for h in sparse["results"]] == ["zymurgy"]
    dense = search(gw, name, "zymurgy", top_k=6, retrieval="dense")
    assert dense["retrieval"] == "dense" and len(dense["results"]) == 6
    # RRF (k=60, ranks from 0): the document first in both lists scores 2/60.
    assert default["results"][0]["id"] == "zymurgy" or dense["results"][0]["id"] != "zymurgy"
    top = default["results"][0]
    if dense["results"][0]["id"] == "zymurgy":
        assert top["score"] == pytest.approx(2 / 60, rel=1e-5)


def test_a_collection_without_a_sparse_side_answers_dense_and_says_so(gw):
    name = make_collection(gw, sparse=False)
    assert gw.client.get(f"/v1/collections/{name}").json()["sparse"] is False
    dense = search(gw, name, "ocean tides", retrieval="dense")
    for asked in (None, "hybrid", "sparse"):
        body = search(gw, name, "ocean tides", **({"retrieval": asked} if asked else {}))
        assert body["retrieval"] == "dense" and ranked(body) == ranked(dense)


def test_bad_retrieval_is_a_422(gw):
    name = make_collection(gw)
    r = gw.client.post(f"/v1/collections/{name}/search", json={"query": "x", "retrieval": "bm25"})
    assert r.status_code == 422 and r.headers["content-type"].startswith("application/problem+json")


def test_batch_search_mixes_modes_and_each_answers_as_alone(gw):
    name = make_collection(gw)
    searches = [
        {"query": "ocean heat", "retrieval": "dense"},
        {"query": "ocean heat", "retrieval": "sparse"},
        {"query": "ocean heat"},
        {"query": "blood vitamin", "retrieval": "hybrid", "top_k": 3},
    ]
    r = gw.client.post(f"/v1/collections/{name}/search/batch", json={"searches": searches})
    assert r.status_code == 200, r.text
    responses = r.json()["responses"]
    assert [b["retrieval"] for b in responses] == ["dense", "sparse", "hybrid", "hybrid"]
    for body, alone in zip(responses, searches, strict=True):
        assert ranked(body) == ranked(search(gw, name, **alone))


def test_streaming_carries_the_retrieval(gw):
    name = make_collection(gw)
    body = {"query": "brewing fermentation", "stream": True, "retrieval": "sparse"}
    with gw.client.stream("POST", f"/v1/collections/{name}/search", json=body) as r:
        assert r.status_code == 200
        events = [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: ")]
    assert events[0]["retrieval"] == "sparse" and events[0]["results"][0]["id"] == "zymurgy"


def test_thoughts_feed_the_bm25_query_in_think_mode():
    """A think query whose thoughts (here from the cache, no worker needed) name what the query does not: BM25 finds
    the document through the thoughts; direct mode, with the query alone, does not."""
    dead = f"http://127.0.0.1:{free_port()}/v1"
    settings = Settings(
        _env_file=None, qdrant_path=":memory:", think_profile="query2doc", thinker_url=dead, thinker_model="m"
    )
    with Gateway(settings) as gw:
        name = make_collection(gw)
        pipeline = gw.app.state.services.pipeline
        query = "what does a brewer study"
        key = pipeline.profile.vector_key(query, "m", pipeline.embedder.name)
        vector = np.zeros(384, np.float32)
        vector[0] = 1.0
        entry = CachedQuery(["Zymurgy: the chemistry of fermentation."], vector)
        asyncio.run(pipeline.cache.set_query(key, entry))  # the in-memory cache: no event loop of its own
        think = search(gw, name, query, think=True, retrieval="sparse")
        direct = search(gw, name, query, think=False, retrieval="sparse")
    assert think["mode"] == "think" and think["thought_cache"] == "hit"
    assert think["results"][0]["id"] == "zymurgy"
    assert "zymurgy" not in [h["id"] for h in direct["results"]]
