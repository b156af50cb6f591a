"""The O1 Embedder profile end to end: one vLLM generate server and one pooling server of the same tiny checkpoint
(with `<query>`, `</query>`, `<thought>`, `<emb>` special tokens)."""

from __future__ import annotations

import uuid

import httpx
import numpy as np
import pytest

from service.settings import Settings
from tests.support.gateway import Gateway
from tests.support.tinymodel import EMB, EOS_TOKEN

DOCS = [
    {"id": "p1", "title": "Tides", "text": "The moon pulls the ocean."},
    {"id": "p2", "text": "Cells divide by mitosis."},
    {"id": "p3", "text": "Interest rates affect inflation."},
]


@pytest.fixture(scope="module")
def gw(vllm, vllm_embed):
    settings = Settings(
        _env_file=None,
        qdrant_path=":memory:",
        think_profile="o1",
        think_max_tokens=16,
        thinker_url=vllm.base_url,
        embedder_url=vllm_embed.base_url,
        search_deadline_ms=60_000,
    )
    with Gateway(settings) as gateway:
        yield gateway


def embed(server, texts: list[str]) -> np.ndarray:
    r = httpx.post(f"{server.base_url}/embeddings", json={"model": "tiny-embed", "input": texts}, timeout=60)
    r.raise_for_status()
    return np.asarray([d["embedding"] for d in sorted(r.json()["data"], key=lambda d: d["index"])])


def test_special_tokens_are_single_tokens_without_bos(vllm_embed):
    r = httpx.post(f"{vllm_embed.url}/tokenize", json={"model": "tiny-embed", "prompt": "abc" + EMB}, timeout=30)
    tokens = r.json()["tokens"]
    emb_only = httpx.post(f"{vllm_embed.url}/tokenize", json={"model": "tiny-embed", "prompt": EMB}, timeout=30)
    assert emb_only.json()["tokens"] == [tokens[-1]]  # one token, and nothing (no BOS) in front of it


def test_o1_search_end_to_end_matches_the_reference_fusion(gw, vllm, vllm_embed):
    name = f"o1_{uuid.uuid4().hex[:6]}"
    created = gw.client.post("/v1/collections", json={"name": name}).json()
    assert created["dimension"] == 128 and created["embedder"] == "tiny-embed"
    r = gw.client.post(f"/v1/collections/{name}/documents", json={"documents": DOCS})
    assert r.json() == {"upserted": 3, "truncated": 0}

    query = "what pulls the ocean"
    before = vllm.completion_requests()
    first = {"query": query, "think": True, "include_thoughts": True, "top_k": 3, "retrieval": "dense"}
    r = gw.client.post(f"/v1/collections/{name}/search", json=first)
    assert r.status_code == 200, r.text
    body = r.json()
    assert vllm.completion_requests() - before == 1  # n=3 thoughts in one raw-completion request
    assert body["mode"] == "think" and not body["degraded"] and len(body["thoughts"]) == 3

    # Reference (O1LLMEmbedder): embed `<query>q</query><thought>t{EOS}<emb>` per thought, L2-normalise,
    # mean (not re-normalised); documents as `text<emb>`. Qdrant scores by cosine.
    texts = [
        f"<query>{query}</query><thought>{t if t.endswith(EOS_TOKEN) else t + EOS_TOKEN}{EMB}" for t in body["thoughts"]
    ]
    thought_vectors = embed(vllm_embed, texts)
    thought_vectors /= np.linalg.norm(thought_vectors, axis=1, keepdims=True)
    fused = thought_vectors.mean(axis=0)
    docs = embed(vllm_embed, [(f"{d['title']} " if d.get("title") else "") + d["text"] + EMB for d in DOCS])
    expected = docs @ fused / (np.linalg.norm(docs, axis=1) * np.linalg.norm(fused))
    got = {h["id"]: h["score"] for h in body["results"]}
    for doc, score in zip(DOCS, expected, strict=True):
        assert got[doc["id"]] == pytest.approx(float(score), abs=1e-4)

    # The repeat is a cache hit on the fused vector: neither the worker nor the embedding server is asked.
    before_embed = vllm_embed.embedding_requests()
    repeat = {"query": query, "include_thoughts": True, "retrieval": "dense"}
    again = gw.client.post(f"/v1/collections/{name}/search", json=repeat).json()
    assert again["thought_cache"] == "hit" and again["thoughts"] == body["thoughts"]
    assert vllm.completion_requests() - before == 1
    assert vllm_embed.embedding_requests() - before_embed == 0
    assert [h["id"] for h in again["results"]] == [h["id"] for h in body["results"]]
    assert [h["score"] for h in again["results"]] == pytest.approx([h["score"] for h in body["results"]], abs=1e-6)


def test_o1_direct_mode_uses_the_empty_thought_format(gw, vllm_embed):
    name = f"o1d_{uuid.uuid4().hex[:6]}"
    gw.client.post("/v1/collections", json={"name": name})
    gw.client.post(f"/v1/collections/{name}/documents", json={"documents": DOCS})
    direct = {"query": "mitosis", "think": False, "retrieval": "dense"}  # cosine scores
    body = gw.client.post(f"/v1/collections/{name}/search", json=direct).json()
    assert body["mode"] == "direct"
    q = embed(vllm_embed, [f"<query>mitosis</query><thought>{EOS_TOKEN}{EMB}"])[0]
    d = embed(vllm_embed, [DOCS[1]["text"] + EMB])[0]
    got = {h["id"]: h["score"] for h in body["results"]}
    assert got["p2"] == pytest.approx(float(q @ d / (np.linalg.norm(q) * np.linalg.norm(d))), abs=1e-4)


def test_embedding_server_down_is_503_and_nothing_is_lost(vllm, vllm_embed):
    settings = Settings(
        _env_file=None,
        qdrant_path=":memory:",
        think_profile="o1",
        thinker_url=vllm.base_url,
        embedder_url=vllm_embed.base_url,
        embedder_timeout_s=2.0,
    )
    with Gateway(settings) as gw:
        gw.client.post("/v1/collections", json={"name": "keep"})
        gw.client.post("/v1/collections/keep/documents", json={"documents": DOCS})
        vllm_embed.pause()
        try:
            search = gw.client.post("/v1/collections/keep/search", json={"query": "q", "think": False})
            upsert = gw.client.post(
                "/v1/collections/keep/documents", json={"documents": [{"id": "p1", "text": "replacement"}]}
            )
            ready = gw.client.get("/readyz")
        finally:
            vllm_embed.resume()
        assert search.status_code == upsert.status_code == 503
        assert search.headers["retry-after"] and search.headers["content-type"].startswith("application/problem")
        assert ready.status_code == 503 and ready.json()["status"] == "unavailable"
        assert gw.client.get("/v1/collections/keep/documents/p1").json()["text"] == DOCS[0]["text"]
        assert gw.client.get("/v1/collections/keep").json()["count"] == 3
