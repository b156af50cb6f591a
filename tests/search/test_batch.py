"""POST /v1/collections/{name}/search/batch: request order, per-query fields, one worker request per distinct cold
query, one embedder call, limits."""

from __future__ import annotations

from tests.search.test_think import search, unique


def batch(gw, queries: list[dict], collection: str | None = None):
    return gw.client.post(f"/v1/collections/{collection or gw.collection}/search/batch", json={"searches": queries})


def test_batch_keeps_order_and_per_query_fields(speed_gw, vllm):
    gw = speed_gw
    cached = unique("tides and the moon")
    search(gw, cached)
    cold_a, cold_b, direct = unique("immune memory"), unique("money supply"), unique("light to sugar")
    before_vllm, before_embed = vllm.completion_requests(), gw.embed_calls.count
    r = batch(
        gw,
        [
            {"query": cold_a, "top_k": 2, "include_thoughts": True},
            {"query": direct, "think": False, "top_k": 3},
            {"query": cached},
            {"query": cold_a, "top_k": 2},
            {"query": cold_b, "top_k": 1},
        ],
    )
    assert r.status_code == 200, r.text
    results = r.json()["responses"]
    assert vllm.completion_requests() - before_vllm == 2  # two distinct cold queries, the repeat joins the first
    # Two embedder calls for the whole batch: the cold queries' own texts while the worker generates, then every
    # other text (thoughts, the direct query) in one call.
    assert gw.embed_calls.count - before_embed == 2
    assert [b["mode"] for b in results] == ["think", "direct", "think", "think", "think"]
    assert [b["thought_cache"] for b in results] == ["miss", None, "hit", "coalesced", "miss"]
    assert [len(b["results"]) for b in results] == [2, 3, 4, 2, 1]  # top_k 10 over 4 documents
    assert not any(b["degraded"] for b in results)
    assert len(results[0]["thoughts"]) > 0 and results[3]["thoughts"] is None

    # Each answer is the answer of the same query searched alone (now from the cache).
    for request, got in ((cold_a, results[0]), (cold_b, results[4])):
        alone = search(gw, request, top_k=len(got["results"]))
        assert alone["thought_cache"] == "hit"
        assert [h["id"] for h in alone["results"]] == [h["id"] for h in got["results"]]
    alone = search(gw, direct, think=False, top_k=3)
    assert [h["id"] for h in alone["results"]] == [h["id"] for h in results[1]["results"]]


def test_batch_over_the_limit_is_422(speed_gw, vllm):
    before = vllm.completion_requests()
    r = batch(speed_gw, [{"query": f"q{i}"} for i in range(speed_gw.settings.max_batch_queries + 1)])
    assert r.status_code == 422 and r.headers["content-type"].startswith("application/problem+json")
    assert "searches" in r.json()["detail"]
    assert vllm.completion_requests() == before


def test_batch_field_errors_name_the_query(speed_gw):
    r = batch(speed_gw, [{"query": "fine"}, {"query": "too many", "top_k": 10_000}])
    assert r.status_code == 422 and "searches[1].top_k" in r.json()["detail"]
    assert batch(speed_gw, []).status_code == 422


def test_batch_on_a_missing_collection_is_404_without_work(speed_gw, vllm):
    before_vllm, before_embed = vllm.completion_requests(), speed_gw.embed_calls.count
    r = batch(speed_gw, [{"query": unique("anything")}, {"query": "x", "think": False}], collection="nope_missing")
    assert r.status_code == 404 and r.headers["content-type"].startswith("application/problem+json")
    assert vllm.completion_requests() == before_vllm
    assert speed_gw.embed_calls.count == before_embed
