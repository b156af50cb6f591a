"""Bulk ingestion on a real Redis (Streams queue, job records in Redis) with the gateway's in-process worker."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import redis

from service.ingest.redis_queue import STREAM
from service.settings import Settings
from tests.ingest.support import NDJSON, ndjson, scifact, wait_job
from tests.support.gateway import Gateway
from tests.support.servers import free_port


def _settings(redis_url: str, **overrides) -> Settings:
    base = {"qdrant_path": ":memory:", "redis_url": redis_url, "ingest_claim_idle_s": 2.0}
    return Settings(**(base | overrides))


def _submit(gw: Gateway, collection: str, docs: list[dict]) -> str:
    r = gw.client.post(f"/v1/collections/{collection}/documents/bulk", content=ndjson(docs), headers=NDJSON)
    assert r.status_code == 202, r.text
    return r.json()["job_id"]


def _wait_queue_empty(redis_url: str, timeout: float = 300.0) -> None:
    client = redis.Redis.from_url(redis_url)
    deadline = time.monotonic() + timeout
    while client.xlen(STREAM) > 0:
        assert time.monotonic() < deadline, "the queue never drained"
        time.sleep(0.5)
    client.close()


@pytest.mark.timeout(2400)  # two shared CPU cores embed a few thousand documents slowly under load
def test_a_few_thousand_scifact_documents_complete_exactly_and_are_searchable(redis_url: str):
    docs = scifact(2000, text_chars=100)
    with Gateway(_settings(redis_url)) as gw:
        gw.client.post("/v1/collections", json={"name": "scifact"})
        job = wait_job(gw.client, _submit(gw, "scifact", docs))
        assert job["status"] == "succeeded", job
        assert job["accepted"] == job["processed"] == job["total"] == 2000 and job["failed"] == 0
        assert gw.client.get("/v1/collections/scifact").json()["count"] == 2000
        for doc in docs[::400]:
            hits = gw.client.post("/v1/collections/scifact/search", json={"query": doc["title"], "top_k": 5}).json()
            assert doc["id"] in [h["id"] for h in hits["results"]], doc["title"]
        metrics = gw.client.get("/metrics").text
        assert 'thinksearch_ingest_documents_total{outcome="ingested"}' in metrics
        assert "thinksearch_ingest_batch_size_count" in metrics


def test_the_job_survives_a_gateway_restart_between_submit_and_completion(redis_url: str, tmp_path: Path):
    docs = scifact(400, offset=2000, text_chars=200)
    settings = _settings(redis_url, qdrant_path=str(tmp_path / "store"), ingest_batch_size=32)
    with Gateway(settings) as gw:
        gw.client.post("/v1/collections", json={"name": "restart"})
        job_id = _submit(gw, "restart", docs)
        before = gw.client.get(f"/v1/jobs/{job_id}").json()
    assert before["status"] in ("queued", "running") and before["processed"] < 400
    with Gateway(settings) as gw:
        assert gw.client.get(f"/v1/jobs/{job_id}").status_code == 200
        job = wait_job(gw.client, job_id)
        assert job["status"] == "succeeded" and job["processed"] == 400, job
        assert gw.client.get("/v1/collections/restart").json()["count"] == 400


def test_a_full_queue_answers_429_with_retry_after(redis_url: str):
    with Gateway(_settings(redis_url, ingest_worker=False, ingest_queue_max=50, ingest_retry_after_s=17)) as gw:
        gw.client.post("/v1/collections", json={"name": "full"})
        _submit(gw, "full", scifact(50))  # admitted: it fits the queue (one more line would be cut)
        r = gw.client.post("/v1/collections/full/documents/bulk", content=ndjson(scifact(5)), headers=NDJSON)
        assert r.status_code == 429 and r.headers["retry-after"] == "17"
        assert r.headers["content-type"] == "application/problem+json"
        assert len(gw.client.get("/v1/jobs?collection=full").json()["jobs"]) == 1


def test_an_unreachable_queue_answers_503(redis_url: str):
    dead = f"redis://127.0.0.1:{free_port()}/0"
    with Gateway(_settings(dead, ingest_redis_timeout_s=0.5, ingest_worker=False)) as gw:
        gw.client.post("/v1/collections", json={"name": "dead"})
        r = gw.client.post("/v1/collections/dead/documents/bulk", content=ndjson(scifact(3)), headers=NDJSON)
        assert r.status_code == 503 and "retry-after" in r.headers


def test_cancel_drops_queued_work_and_writes_nothing_more(redis_url: str, tmp_path: Path):
    store = str(tmp_path / "store")
    # Queued with no worker running, then cancelled: a worker that starts later writes none of it.
    with Gateway(_settings(redis_url, qdrant_path=store, ingest_worker=False)) as gw:
        gw.client.post("/v1/collections", json={"name": "cancel"})
        job_id = _submit(gw, "cancel", scifact(300))
        r = gw.client.delete(f"/v1/jobs/{job_id}")
        assert r.status_code == 202 and r.json()["status"] == "cancelled"
    with Gateway(_settings(redis_url, qdrant_path=store)) as gw:
        _wait_queue_empty(redis_url)
        job = gw.client.get(f"/v1/jobs/{job_id}").json()
        assert job["status"] == "cancelled" and job["processed"] == 0
        assert gw.client.get("/v1/collections/cancel").json()["count"] == 0

        # Cancelled while running: what was written stays, nothing is written after the queue drained.
        running = _submit(gw, "cancel", scifact(600, offset=300, text_chars=200))
        wait_job(gw.client, running, until=lambda j: j["processed"] > 0)
        assert gw.client.delete(f"/v1/jobs/{running}").json()["status"] == "cancelled"
        _wait_queue_empty(redis_url)
        written = gw.client.get("/v1/collections/cancel").json()["count"]
        time.sleep(3)
        assert gw.client.get("/v1/collections/cancel").json()["count"] == written < 600
        job = gw.client.get(f"/v1/jobs/{running}").json()
        assert job["status"] == "cancelled" and 0 < job["processed"] < 600
