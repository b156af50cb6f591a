"""Tuning as a job of the gateway (POST /v1/collections/{name}/tune): real vLLM (tiny model), real Redis, MiniLM."""

from __future__ import annotations

import time
import uuid

import pytest

from tests.search.test_think import think_settings
from tests.support.gateway import Gateway
from tests.tools.test_tune import GRID, QUERIES, TOPICS, load

DOCS = [{"_id": k, "title": t, "text": x} for k, (t, x) in TOPICS.items()]
# Queries of this module's own (a word of their own each run): the thought cache, shared through Redis by the whole
# session, must not answer tests/tools/test_tune.py's searches of the same topics, nor these, from an earlier run.
TAG = uuid.uuid4().hex[:6]
JUDGED = {
    "queries": {q: f"{t} {TAG}" for q, (t, _) in QUERIES.items()},
    "qrels": {q: {d: 1} for q, (_, d) in QUERIES.items()},
}


@pytest.fixture(scope="module")
def gw(vllm, redis_server):
    with Gateway(think_settings(thinker_url=vllm.base_url, redis_url=redis_server.url)) as gateway:
        yield gateway


def follow(gw: Gateway, job: dict, timeout_s: float = 300) -> tuple[dict, list[int]]:
    """The job once it ended, and the `done` counts seen on the way."""
    seen = []
    deadline = time.monotonic() + timeout_s
    while job["status"] in ("queued", "running"):
        assert time.monotonic() < deadline, job
        time.sleep(0.2)
        job = gw.client.get(f"/v1/jobs/{job['job_id']}").json()
        seen.append(job["tune"]["done"])
    return job, seen


def test_a_tune_job_reports_progress_and_the_table_and_leaves_the_policy_alone_until_the_end(gw, vllm):
    name = load(gw, DOCS)
    before = gw.client.get(f"/v1/collections/{name}").json()["think"]
    requests = vllm.completion_requests()
    r = gw.client.post(f"/v1/collections/{name}/tune", json={**JUDGED, "grid": GRID, "concurrency": 2})
    assert r.status_code == 202, r.text
    assert r.headers["location"] == f"/v1/jobs/{r.json()['job_id']}"
    started = r.json()
    searches = len(QUERIES) * (1 + len(GRID["generation"]) * (1 + len(GRID["fusion"])))
    assert started["kind"] == "tune" and started["tune"]["searches"] == searches == started["total"]
    # While it runs, live traffic keeps the stored policy: each tuning search carries the config it tries.
    running = gw.client.get(f"/v1/jobs/{started['job_id']}").json()
    if running["status"] == "running":
        assert gw.client.get(f"/v1/collections/{name}").json()["think"] == before
    job, seen = follow(gw, started)
    assert job["status"] == "succeeded", job
    assert seen == sorted(seen) and job["tune"]["done"] == job["processed"] == searches
    result = job["tune"]["result"]
    assert [row["label"] for row in result["rows"]] == [
        "direct",
        "current / vector α=profile",
        "current / rank w=0.3",
        "short / vector α=profile",
        "short / rank w=0.3",
    ]
    # One worker request per query and generation config: the fusions reuse the cached thoughts.
    assert vllm.completion_requests() - requests == len(QUERIES) * len(GRID["generation"])
    direct = result["rows"][0]
    assert direct["metrics"]["ndcg@10"] == pytest.approx(1.0) and direct["winner"]  # the set is built so
    # The tiny model's thoughts are noise: nothing beats direct, thinking is written off (ties go to direct).
    assert result["thinking"] is False and result["written"]["enabled"] is False
    after = gw.client.get(f"/v1/collections/{name}").json()["think"]
    assert after == result["policy"] and after["enabled"] is False
    assert after["prompt"] == before["prompt"] and after["n"] == before["n"] or result["best"].startswith("short")


def test_a_dry_run_writes_nothing_and_a_cancel_stops_the_searches(gw, vllm):
    name = load(gw, DOCS)
    before = gw.client.get(f"/v1/collections/{name}").json()["think"]
    r = gw.client.post(f"/v1/collections/{name}/tune", json={**JUDGED, "grid": GRID, "dry_run": True})
    job, _ = follow(gw, r.json())
    assert job["status"] == "succeeded" and job["tune"]["result"]["written"] is None
    assert gw.client.get(f"/v1/collections/{name}").json()["think"] == before

    # Many fresh generation configs (each its own thoughts): long enough to cancel half way.
    grid = {
        "generation": [{"label": f"t{i}", "temperature": 0.5 + i / 100} for i in range(12)],
        "fusion": GRID["fusion"],
    }
    vllm.pause()
    try:
        r = gw.client.post(f"/v1/collections/{name}/tune", json={**JUDGED, "grid": grid, "concurrency": 1})
        assert r.status_code == 202, r.text
        cancelled = gw.client.delete(f"/v1/jobs/{r.json()['job_id']}")
        assert cancelled.status_code == 202 and cancelled.json()["status"] == "cancelled"
    finally:
        vllm.resume()
    job, _ = follow(gw, cancelled.json())
    assert job["status"] == "cancelled" and job["tune"]["result"] is None
    assert job["tune"]["done"] < job["tune"]["searches"]
    assert gw.client.get(f"/v1/collections/{name}").json()["think"] == before


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"grid": {"generation": [{"top_p": 0.9}], "fusion": [{"method": "vector"}]}}, "top_p"),
        ({"grid": {"generation": [{"label": "a"}, {"label": "a"}], "fusion": [{"method": "rank"}]}}, "grid"),
        ({"grid": {"generation": [{"prompt": "no query slot here"}], "fusion": [{"method": "rank"}]}}, "prompt"),
        ({"grid": {"generation": [], "fusion": [{"method": "rank"}]}}, "generation"),
        ({"qrels": {"nobody": {"tides": 1}}}, "qrels"),
        ({"qrels": {"q1": {"tides": 10**30}}}, "qrels"),
        ({"queries": {"q1": "   "}}, "queries"),
        ({"max_queries": 0}, "max_queries"),
        ({"concurrency": 1000}, "concurrency"),
        ({"grid": {"generation": [{"profile": "o1"}], "fusion": [{"method": "rank"}]}}, "think"),
    ],
)
def test_a_bad_request_is_a_422_naming_the_field(gw, change, field):
    name = f"tune_{uuid.uuid4().hex[:8]}"
    gw.client.post("/v1/collections", json={"name": name})
    gw.client.post(f"/v1/collections/{name}/documents", json={"documents": [{"id": "tides", "text": "the moon"}]})
    r = gw.client.post(f"/v1/collections/{name}/tune", json={**JUDGED, **change})
    assert r.status_code == 422 and field in r.text, r.text


def test_an_unknown_or_empty_collection_and_a_gateway_without_worker_are_refused(gw):
    assert gw.client.post("/v1/collections/tune_nope/tune", json=JUDGED).status_code == 404
    empty = f"tune_{uuid.uuid4().hex[:8]}"
    assert gw.client.post("/v1/collections", json={"name": empty}).status_code == 201
    r = gw.client.post(f"/v1/collections/{empty}/tune", json=JUDGED)
    assert r.status_code == 409 and "empty" in r.json()["detail"]
    with Gateway(think_settings()) as plain:
        name = load(plain, DOCS)
        r = plain.client.post(f"/v1/collections/{name}/tune", json=JUDGED)
        assert r.status_code == 409 and "THINKER_URL" in r.json()["detail"]
