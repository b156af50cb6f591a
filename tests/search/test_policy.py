"""Per-collection think policy and the fusions that keep weak thoughts from dragging the query down."""

from __future__ import annotations

import uuid

import numpy as np
import pytest
from sentence_transformers import SentenceTransformer

from service.clients.local_embedder import _resolve_local_model
from service.model.documents import Hit, StoredDocument
from service.search.retrieve import weighted_rrf
from tests.search.test_think import DOCS, N_THOUGHTS, think_settings, unique
from tests.support.gateway import Gateway


@pytest.fixture(scope="module")
def pgw(vllm, redis_server):
    with Gateway(think_settings(thinker_url=vllm.base_url, redis_url=redis_server.url)) as gateway:
        yield gateway


@pytest.fixture(scope="module")
def model():
    return SentenceTransformer(_resolve_local_model(None), device="cpu")


def _collection(gw: Gateway, think: dict | None = None) -> str:
    name = f"p_{uuid.uuid4().hex[:8]}"
    body = {"name": name, **({"think": think} if think is not None else {})}
    r = gw.client.post("/v1/collections", json=body)
    assert r.status_code == 201, r.text
    assert gw.client.post(f"/v1/collections/{name}/documents", json={"documents": DOCS}).status_code == 200
    return name


def _search(gw: Gateway, collection: str, query: str, **extra) -> dict:
    r = gw.client.post(f"/v1/collections/{collection}/search", json={"query": query, **extra})
    assert r.status_code == 200, r.text
    return r.json()


def test_policy_is_set_at_creation_changed_by_patch_and_shown_by_get(pgw):
    name = _collection(pgw, {"n": 2, "fusion": "rank", "think_weight": 0.25, "prompt": "Answer: {query}"})
    think = pgw.client.get(f"/v1/collections/{name}").json()["think"]
    assert think["n"] == 2 and think["fusion"] == "rank" and think["think_weight"] == 0.25
    assert think["prompt"] == "Answer: {query}" and think["profile"] == "hyde"
    assert think["max_tokens"] == 24  # not in the policy: the service's THINK_MAX_TOKENS

    r = pgw.client.patch(f"/v1/collections/{name}", json={"think": {"n": 3, "prompt": None, "enabled": False}})
    assert r.status_code == 200, r.text
    think = pgw.client.get(f"/v1/collections/{name}").json()["think"]
    assert think["n"] == 3 and think["fusion"] == "rank" and think["enabled"] is False
    assert think["prompt"] != "Answer: {query}"  # null: back to the service's default prompt

    # A search that does not say follows the collection's `enabled`; one that says, itself.
    assert _search(pgw, name, unique("tides"))["mode"] == "direct"
    assert _search(pgw, name, unique("tides"), think=True)["mode"] == "think"


@pytest.mark.parametrize(
    "think",
    [
        {"n": 0},
        {"fusion": "mean"},
        {"think_weight": 1.5},
        {"prompt": "no slot for the query"},
        {"prompt": "{query} and a {stray} brace"},
        {"profile": "o1"},  # the collection's documents are in HyDE's format
        {"unknown": 1},
    ],
)
def test_invalid_policies_are_422(pgw, think):
    name = _collection(pgw)
    assert pgw.client.patch(f"/v1/collections/{name}", json={"think": think}).status_code == 422
    assert (
        pgw.client.post("/v1/collections", json={"name": f"x{uuid.uuid4().hex[:6]}", "think": think}).status_code == 422
    )


def test_a_changed_policy_misses_the_vector_cache_and_an_unchanged_one_hits(pgw, vllm):
    name = _collection(pgw)
    query = unique("what moves the oceans")
    assert _search(pgw, name, query, think=True)["thought_cache"] == "miss"
    assert _search(pgw, name, query, think=True)["thought_cache"] == "hit"
    pgw.client.patch(f"/v1/collections/{name}", json={"think": {"think_weight": 0.2}})  # retrieval only
    assert _search(pgw, name, query, think=True)["thought_cache"] == "hit"
    before = vllm.completion_requests()
    pgw.client.patch(f"/v1/collections/{name}", json={"think": {"n": 2}})  # shapes the thoughts
    body = _search(pgw, name, query, think=True, include_thoughts=True)
    assert body["thought_cache"] == "miss" and len(body["thoughts"]) == 2
    assert vllm.completion_requests() == before + 1
    pgw.client.patch(f"/v1/collections/{name}", json={"think": {"query_weight": 0.5}})  # shapes the vector only
    body = _search(pgw, name, query, think=True)
    assert body["thought_cache"] == "hit"  # the thoughts are reused; the vector is a new cache entry...
    assert _search(pgw, name, query, think=True)["thought_cache"] == "hit"
    assert vllm.completion_requests() == before + 1  # ...and no second worker request for it


def _cosines(model, vector: np.ndarray) -> dict[str, float]:
    docs = model.encode([d["text"] for d in DOCS])
    scores = docs @ vector / (np.linalg.norm(docs, axis=1) * np.linalg.norm(vector))
    return {d["id"]: float(s) for d, s in zip(DOCS, scores, strict=True)}


def test_vector_fusion_query_weight_one_is_the_direct_vector_and_one_over_n_plus_one_hydes_mean(pgw, model):
    name = _collection(pgw)
    query = unique("tides and the moon")
    common = {"think": True, "include_thoughts": True, "top_k": len(DOCS), "retrieval": "dense"}
    direct = _search(pgw, name, query, think=False, top_k=len(DOCS), retrieval="dense")
    alone = _search(pgw, name, query, **common, fusion={"method": "vector", "query_weight": 1.0})
    assert alone["mode"] == "think"
    assert {h["id"]: h["score"] for h in alone["results"]} == pytest.approx(
        {h["id"]: h["score"] for h in direct["results"]}, abs=1e-5
    )
    mean = _search(pgw, name, query, **common, fusion={"method": "vector", "query_weight": 1 / (N_THOUGHTS + 1)})
    fused = model.encode([query, *mean["thoughts"]]).mean(axis=0)  # HyDE's mean, computed here
    assert {h["id"]: h["score"] for h in mean["results"]} == pytest.approx(_cosines(model, fused), abs=1e-4)


def test_rank_fusion_is_the_weighted_rrf_of_the_direct_and_the_think_lists(pgw):
    name = _collection(pgw)
    query = unique("energy from light")
    lists = {"top_k": len(DOCS), "retrieval": "dense"}
    direct = _search(pgw, name, query, think=False, **lists)["results"]
    think = _search(pgw, name, query, think=True, **lists, fusion={"method": "vector"})["results"]
    fused = _search(pgw, name, query, think=True, **lists, fusion={"method": "rank", "think_weight": 0.3})
    assert fused["mode"] == "think"
    k = think_settings().search_rrf_k
    expected: dict[str, float] = {}
    for hits, w in ((direct, 0.7), (think, 0.3)):
        for rank, h in enumerate(sorted(hits, key=lambda h: (-h["score"], h["id"])), start=1):  # ties by id
            expected[h["id"]] = expected.get(h["id"], 0.0) + w / (k + rank)
    assert [h["id"] for h in fused["results"]] == sorted(expected, key=lambda d: (-expected[d], d))
    assert {h["id"]: h["score"] for h in fused["results"]} == pytest.approx(expected)


def test_weighted_rrf_keeps_the_first_lists_hit_and_takes_top_k():
    def hit(i: str, score: float) -> Hit:
        return Hit(StoredDocument(i, f"text {i}", "", {}), score)

    a, b = [hit("x", 0.9), hit("y", 0.8)], [hit("y", 0.5), hit("z", 0.4)]
    fused = weighted_rrf([(a, 0.5), (b, 0.5)], k=1, top_k=2)
    assert [h.document.id for h in fused] == ["y", "x"]  # y: 0.5/3 + 0.5/2 beats x: 0.5/2
    assert fused[0].score == pytest.approx(0.5 / 3 + 0.5 / 2)
