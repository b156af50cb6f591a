"""SIGKILL in the middle of a job, in both topologies: nothing lost, nothing duplicated, counts exact.

A: a gateway without a worker and two `thinksearch worker` processes sharing a store through QDRANT_URL (the
   test-only Qdrant stand-in); one worker is killed, another started.
B: the embedded store with Redis: the gateway (the store's only writer) is killed and started again on the same
   store folder.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import redis

from service.ingest.redis_queue import GROUP, STREAM
from tests.ingest.support import NDJSON, ServiceProcess, ndjson, scifact, wait_job
from tests.support.qdrant_standin import QdrantStandin

N = 320
COMMON = {"INGEST_CLAIM_IDLE_S": "3", "INGEST_BATCH_SIZE": "32"}


def _submit(client: httpx.Client, docs: list[dict]) -> str:
    assert client.post("/v1/collections", json={"name": "crash"}).status_code == 201
    r = client.post("/v1/collections/crash/documents/bulk", content=ndjson(docs), headers=NDJSON)
    assert r.status_code == 202, r.text
    return r.json()["job_id"]


def _pending_of(redis_url: str, consumer_prefix: str) -> int:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        consumers = client.xinfo_consumers(STREAM, GROUP)
    finally:
        client.close()
    return sum(c["pending"] for c in consumers if c["name"].split("-")[-2] == consumer_prefix)


def _assert_complete_and_exact(client: httpx.Client, job_id: str, docs: list[dict]) -> None:
    job = wait_job(client, job_id)
    assert job["status"] == "succeeded", job
    assert job["accepted"] == job["processed"] == len(docs), job  # no entry counted twice
    assert client.get("/v1/collections/crash").json()["count"] == len(docs)  # no duplicate point
    for doc in docs:  # no lost document, each stored whole
        got = client.get(f"/v1/collections/crash/documents/{doc['id']}")
        assert got.status_code == 200 and got.json()["text"] == doc["text"], doc["id"]


def test_topology_a_a_killed_worker_loses_and_duplicates_nothing(redis_url: str):
    docs = scifact(N, offset=3000, text_chars=300)
    with QdrantStandin() as qdrant:
        env = {"QDRANT_URL": qdrant.url, "REDIS_URL": redis_url, **COMMON}
        with (
            ServiceProcess("serve", {**env, "INGEST_WORKER": "false"}) as gateway,
            ServiceProcess("worker", env) as doomed,
            ServiceProcess("worker", env) as survivor,
            httpx.Client(base_url=gateway.url, timeout=120) as client,
        ):
            job_id = _submit(client, docs)
            wait_job(client, job_id, until=lambda j: j["processed"] >= 64)
            doomed_pid = str(doomed.pid)
            doomed.kill()
            held = _pending_of(redis_url, doomed_pid)
            print(f"killed worker {doomed_pid} holding {held} unacknowledged entries")
            assert held > 0  # the kill really left work behind for another worker to claim
            with ServiceProcess("worker", env):
                _assert_complete_and_exact(client, job_id, docs)
            assert survivor.running


def test_topology_b_a_killed_gateway_with_the_embedded_store_resumes_on_restart(redis_url: str, tmp_path: Path):
    docs = scifact(N, offset=3500, text_chars=300)
    env = {"QDRANT_PATH": str(tmp_path / "store"), "REDIS_URL": redis_url, **COMMON}
    gateway = ServiceProcess("serve", env)
    with gateway, httpx.Client(timeout=120) as client:
        client.base_url = gateway.url
        job_id = _submit(client, docs)
        wait_job(client, job_id, until=lambda j: j["processed"] >= 64)
        gateway.kill()
        gateway.start()  # same port, same store folder
        client.base_url = gateway.url
        _assert_complete_and_exact(client, job_id, docs)
