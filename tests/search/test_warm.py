"""Thought warming: POST /v1/collections/{name}/warm starts a job (GET /v1/jobs/{id}); `thinksearch warm` follows it."""

from __future__ import annotations

import time

from service.cli import main
from tests.search.test_think import search, setup_collection, think_settings, unique
from tests.support.gateway import Gateway


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


def follow(gw, job_id: str, timeout_s: float = 120) -> dict:
    deadline = time.monotonic() + timeout_s
    while True:
        job = gw.client.get(f"/v1/jobs/{job_id}").json()
        if job["status"] not in ("queued", "running") or time.monotonic() > deadline:
            return job
        time.sleep(0.1)


def test_warm_route_answers_202_with_a_job_whose_progress_is_readable(speed_gw, vllm):
    gw = speed_gw
    queries = [unique(f"job warm question {i}") for i in range(4)]
    search(gw, queries[0])  # already cached: skipped
    before = vllm.completion_requests()
    r = gw.client.post(f"/v1/collections/{gw.collection}/warm", json={"queries": [*queries, queries[1]]})
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["kind"] == "warm" and job["collection"] == gw.collection and job["status"] in ("queued", "running")
    assert r.headers["location"] == f"/v1/jobs/{job['job_id']}"

    done = follow(gw, job["job_id"])
    assert done["status"] == "succeeded", done
    progress = done["warm"]
    assert progress["queries"] == 5 and progress["done"] == 5 and progress["failed"] == 0
    # queries[1] twice in one job: one worker request, the copy coalesced with it.
    assert progress["skipped"] == 1 and progress["warmed"] == 4 and progress["worker_requests"] == 3
    assert progress["queries_per_second"] > 0
    assert done["total"] == 5 and done["processed"] == 5 and done["finished_at"] is not None
    assert vllm.completion_requests() - before == 3
    listed = gw.client.get("/v1/jobs", params={"collection": gw.collection}).json()["jobs"]
    assert any(j["job_id"] == job["job_id"] and j["kind"] == "warm" for j in listed)

    before = vllm.completion_requests()
    for query in queries:
        assert search(gw, query)["thought_cache"] == "hit"
    assert vllm.completion_requests() == before


def test_cancelling_a_warm_job_stops_its_worker_requests(speed_gw, vllm):
    gw = speed_gw
    queries = [unique(f"cancelled warm question {i}") for i in range(200)]
    job = gw.client.post(f"/v1/collections/{gw.collection}/warm", json={"queries": queries}).json()
    assert gw.client.delete(f"/v1/jobs/{job['job_id']}").status_code == 202
    time.sleep(2)  # the runner notices within its report interval; requests already sent finish
    settled = vllm.completion_requests()
    time.sleep(2)
    assert vllm.completion_requests() == settled
    final = gw.client.get(f"/v1/jobs/{job['job_id']}").json()
    assert final["status"] == "cancelled" and final["warm"]["done"] < len(queries)


def test_warm_without_a_worker_is_409(redis_server):
    with Gateway(think_settings(redis_url=redis_server.url)) as gw:
        name = setup_collection(gw)
        r = gw.client.post(f"/v1/collections/{name}/warm", json={"queries": ["x"]})
        assert r.status_code == 409 and r.headers["content-type"].startswith("application/problem+json")
