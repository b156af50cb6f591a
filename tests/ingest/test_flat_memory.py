"""The gateway reads a bulk upload as a stream: its RSS does not grow with the upload's size."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx

from tests.ingest.support import NDJSON, ServiceProcess, scifact
from tests.support.servers import rss_bytes

BATCH = 64


def _lines(docs: list[dict], copies: int) -> Iterator[bytes]:
    for copy in range(copies):
        yield "".join(json.dumps(d | {"id": f"{d['id']}-{copy}"}) + "\n" for d in docs).encode()


def _upload(client: httpx.Client, docs: list[dict], copies: int) -> tuple[str, int]:
    size = sum(len(chunk) for chunk in _lines(docs, copies))
    r = client.post("/v1/collections/flat/documents/bulk", content=_lines(docs, copies), headers=NDJSON)
    assert r.status_code == 202, r.text
    return r.json()["job_id"], size


def test_an_upload_far_larger_than_a_worker_batch_keeps_gateway_rss_flat(redis_url: str, tmp_path):
    docs = scifact(BATCH * 2)
    # The queue is Redis and no worker runs in this gateway, so whatever it holds of an upload shows in its RSS.
    env = {"QDRANT_PATH": str(tmp_path / "store"), "REDIS_URL": redis_url, "INGEST_WORKER": "false"}
    with ServiceProcess("serve", env) as gateway, httpx.Client(base_url=gateway.url, timeout=300) as client:
        client.post("/v1/collections", json={"name": "flat"})
        small_job, small_size = _upload(client, docs, 1)  # warm-up: every code path once
        baseline = rss_bytes(gateway.process_pids())
        big_job, big_size = _upload(client, docs, 100)  # 200 worker batches, ~100x the warm-up
        after = rss_bytes(gateway.process_pids())
        jobs = [client.get(f"/v1/jobs/{j}").json() for j in (small_job, big_job)]
    growth = after - baseline
    print(
        f"\nupload {big_size / 2**20:.1f} MiB ({len(docs) * 100} docs, {len(docs) * 100 // BATCH} worker batches): "
        f"gateway RSS {baseline / 2**20:.0f} -> {after / 2**20:.0f} MiB (growth {growth / 2**20:.1f} MiB, "
        f"{growth / big_size:.2%} of the upload); warm-up upload {small_size / 2**20:.2f} MiB"
    )
    assert jobs[1]["accepted"] == len(docs) * 100 and jobs[1]["status"] == "queued"
    assert growth < big_size / 4
