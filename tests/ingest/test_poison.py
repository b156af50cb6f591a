"""One bad entry never stops ingestion: it fails alone (line, id, reason), the job and the jobs after it go on; an
entry that keeps coming back is dead-lettered; a stage that dies comes back; upload limits hold while streaming."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
import redis.asyncio as aioredis

from service.ingest.memory_queue import MemoryBroker
from service.ingest.redis_queue import DEAD_LETTERS, RedisBroker
from service.settings import Settings
from tests.ingest.support import NDJSON, ndjson, scifact, wait_job
from tests.support.gateway import Gateway


def _queue_raw(gw: Gateway, lines: list[str]) -> str:
    """Entries put straight into the gateway's queue, as an older version (or a damaged queue) could have left them:
    the worker must not trust that every queued line was validated."""
    broker = gw.app.state.services.ingestion.broker

    async def put() -> str:
        job = await broker.create_job("poison")
        await broker.enqueue(job.job_id, "poison", list(enumerate(lines, start=1)))
        await broker.seal(job.job_id, total=len(lines), rejected=0, errors=[])
        return job.job_id

    return gw.run(put())


def test_poison_lines_fail_alone_and_every_later_job_completes(tmp_path):
    settings = Settings(qdrant_path=str(tmp_path / "store"))
    with Gateway(settings) as gw:
        assert gw.client.post("/v1/collections", json={"name": "poison"}).status_code == 201
        good = {"id": "good", "text": "Tides follow the Moon."}
        lines = [
            json.dumps(good),
            '{"id":"p1","text":"poison","metadata":{"a[":"v"}}',  # a key Qdrant's path syntax cannot take
            '{"id":"p2","text":"poison","metadata":{"x":Infinity}}',  # not a finite number
            '{"id":"p3","text":"poison","metadata":{"n":1180591620717411303424}}',  # past 64 bits
            "[" * 10_000 + "]" * 10_000,  # nested past the parser's recursion limit
            "not json",
        ]
        job = wait_job(gw.client, _queue_raw(gw, lines), timeout=120)
        assert job["status"] == "succeeded", job
        assert job["processed"] == 1 and job["failed"] == 5, job
        assert sorted(e["line"] for e in job["errors"]) == [2, 3, 4, 5, 6]
        assert {e["id"] for e in job["errors"] if e["line"] <= 4} <= {"p1", "p2", "p3", None}
        assert all(e["error"] for e in job["errors"])

        # The worker is alive: the next, valid job completes; nothing of the poison was stored.
        r = gw.client.post(
            "/v1/collections/poison/documents/bulk", content=ndjson(scifact(3, text_chars=300)), headers=NDJSON
        )
        assert r.status_code == 202, r.text
        assert wait_job(gw.client, r.json()["job_id"], timeout=120)["status"] == "succeeded"
        assert gw.client.get("/v1/collections/poison").json()["count"] == 4
        assert gw.client.get("/v1/collections/poison/documents/p1").status_code == 404
        ready = gw.client.get("/readyz")
        assert ready.status_code == 200 and ready.json()["status"] == "ready", ready.text


def test_a_stage_that_dies_is_restarted_and_its_batch_delivered_again(tmp_path):
    settings = Settings(qdrant_path=str(tmp_path / "store"), ingest_claim_idle_s=0.5)
    with Gateway(settings) as gw:
        services = gw.app.state.services
        broker, worker = services.ingestion.broker, services.ingestion.worker
        assert gw.client.post("/v1/collections", json={"name": "c"}).status_code == 201
        real_complete = broker.complete
        calls = []

        async def complete_failing_once(entries, truncated):
            calls.append(len(entries))
            if len(calls) == 1:
                raise RuntimeError("a bug in the acknowledgement")
            await real_complete(entries, truncated)

        broker.complete = complete_failing_once
        r = gw.client.post(
            "/v1/collections/c/documents/bulk", content=ndjson(scifact(4, text_chars=300)), headers=NDJSON
        )
        job = wait_job(gw.client, r.json()["job_id"], timeout=120)
        assert job["status"] == "succeeded" and job["processed"] == 4, job
        assert worker.restarts == 1 and len(calls) >= 2
        assert "1 restarts" in worker.health()
        metrics = gw.client.get("/metrics").text
        assert 'thinksearch_ingest_worker_restarts_total{stage="write"} 1.0' in metrics


def test_memory_broker_dead_letters_an_entry_that_keeps_coming_back():
    async def run() -> None:
        broker = MemoryBroker(queue_max=100, max_errors=10, claim_idle_s=0.0, max_deliveries=3)
        job = await broker.create_job("c")
        await broker.enqueue(job.job_id, "c", [(1, '{"id": "k", "text": "kills workers"}')])
        await broker.seal(job.job_id, total=1, rejected=0, errors=[])
        deliveries = []
        for _ in range(10):  # taken and never acknowledged, as by a worker that dies on it
            deliveries += [e.deliveries for e in await broker.read("w", 10, block_s=0.01)]
        assert deliveries == [1, 2, 3]
        job = await broker.get(job.job_id)
        assert job.status == "succeeded" and job.write_failed == 1 and "dead-lettered" in job.write_errors[0]["error"]
        assert len(broker.dead_letters) == 1 and await broker.queued() == 0

    asyncio.run(run())


def test_redis_broker_dead_letters_an_entry_that_keeps_coming_back(redis_url):
    async def run() -> None:
        client = aioredis.Redis.from_url(redis_url, decode_responses=True)
        broker = RedisBroker(client, queue_max=100, claim_idle_s=0.05, max_errors=10, job_ttl_s=600, max_deliveries=2)
        try:
            job = await broker.create_job("c")
            await broker.enqueue(job.job_id, "c", [(7, '{"id": "k", "text": "kills workers"}')])
            await broker.seal(job.job_id, total=1, rejected=0, errors=[])
            deliveries = []
            deadline = time.monotonic() + 30
            while (await broker.get(job.job_id)).status == "queued" or await broker.queued():
                assert time.monotonic() < deadline, deliveries
                deliveries += [e.deliveries for e in await broker.read(f"w{len(deliveries)}", 10, block_s=0.05)]
                await asyncio.sleep(0.06)
            assert deliveries == [1, 2]
            job = await broker.get(job.job_id)
            assert job.status == "succeeded" and job.write_failed == 1, job
            assert job.write_errors[0]["line"] == 7 and job.write_errors[0]["id"] == "k"
            (dead,) = await client.xrange(DEAD_LETTERS)
            assert dead[1]["job"] == job.job_id and "delivered" in dead[1]["reason"]
        finally:
            await broker.aclose()

    asyncio.run(run())


@pytest.mark.parametrize("limit", ["queue", "size"])
def test_an_upload_past_a_limit_is_cut_while_it_streams(tmp_path, limit):
    # No worker drains the queue: the limit is what stops the upload.
    if limit == "queue":
        settings = Settings(qdrant_path=str(tmp_path / "s"), ingest_worker=False, ingest_queue_max=5)
    else:
        settings = Settings(qdrant_path=str(tmp_path / "s"), ingest_worker=False, max_upload_bytes=4096)
    with Gateway(settings) as gw:
        assert gw.client.post("/v1/collections", json={"name": "c"}).status_code == 201
        r = gw.client.post(
            "/v1/collections/c/documents/bulk", content=ndjson(scifact(40, text_chars=300)), headers=NDJSON
        )
        assert r.status_code == (429 if limit == "queue" else 413), r.text
        problem = r.json()
        assert problem["job_id"] and problem["line"] >= (1 if limit == "queue" else 0)  # lines read before the cut
        if limit == "queue":
            assert r.headers["retry-after"]
        job = gw.client.get(f"/v1/jobs/{problem['job_id']}").json()
        assert job["status"] == "failed" and "cut at line" in job["error"], job
        assert gw.client.get("/readyz").status_code == 200
