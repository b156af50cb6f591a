"""Thought warming: `thinksearch warm QUERIES_FILE` through POST /v1/collections/{name}/warm."""

from __future__ import annotations

from service.cli import main
from tests.search.test_think import search, unique


def test_warmed_queries_are_cache_hits_without_worker_requests(speed_gw, vllm, tmp_path, capsys):
    gw = speed_gw
    queries = [unique(f"warm question {i}") for i in range(5)]
    already = queries[0]
    search(gw, already)
    log = tmp_path / "queries.txt"
    log.write_text("\n".join([*queries, queries[1], ""]) + "\n")  # a repeat and a blank line

    before = vllm.completion_requests()
    main(["warm", str(log), "--collection", gw.collection, "--url", gw.url, "--chunk", "2"])
    printed = capsys.readouterr().out
    assert vllm.completion_requests() - before == 4  # one per distinct query not yet cached
    # queries[0] was searched before; the repeat of queries[1] comes in a later chunk, after it was warmed.
    assert "6 queries" in printed and "4 warmed, 2 already cached, 0 failed; 4 worker requests" in printed
    assert "queries/s" in printed

    before_vllm, before_embed = vllm.completion_requests(), gw.embed_calls.count
    for query in queries:
        body = search(gw, query)
        assert body["mode"] == "think" and body["thought_cache"] == "hit"
    assert vllm.completion_requests() == before_vllm
    assert gw.embed_calls.count == before_embed

    # Warming again skips everything.
    main(["warm", str(log), "--collection", gw.collection, "--url", gw.url])
    assert "6 already cached" in capsys.readouterr().out and vllm.completion_requests() == before_vllm


def test_warm_limits_and_missing_collection(speed_gw):
    gw = speed_gw
    too_many = [f"q{i}" for i in range(gw.settings.max_warm_queries_per_request + 1)]
    assert gw.client.post(f"/v1/collections/{gw.collection}/warm", json={"queries": too_many}).status_code == 422
    assert gw.client.post(f"/v1/collections/{gw.collection}/warm", json={"queries": [" "]}).status_code == 422
    assert gw.client.post("/v1/collections/nope_missing/warm", json={"queries": ["x"]}).status_code == 404
