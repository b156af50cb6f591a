"""The bulk endpoint and the jobs API with the embedded defaults (in-process queue and worker, embedded Qdrant)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from service.settings import Settings
from tests.ingest.support import NDJSON, ROOT, ndjson, scifact, wait_job
from tests.support.gateway import Gateway


@pytest.fixture(scope="module")
def gateway():
    # A body limit far below the uploads: the bulk route streams, so it must not apply there.
    with Gateway(Settings(qdrant_path=":memory:", max_body_bytes=4096, max_text_chars=2000)) as gw:
        assert gw.client.post("/v1/collections", json={"name": "bulk"}).status_code == 201
        yield gw


def test_malformed_lines_are_reported_by_line_and_every_valid_line_is_ingested(gateway: Gateway):
    valid = scifact(40)
    for d in valid:
        d["text"] = d["text"][:2000]
    bad = [
        b"\xff\xfenot utf-8",
        b'{"id": "broken", "text": ',
        b'"just a string"',
        b'{"text": "no id at all"}',
        b'{"id": "", "text": "empty id"}',
        b'{"id": "blank-text", "text": "  \\t "}',
        json.dumps({"id": "long-text", "text": "x" * 2001}).encode(),
        json.dumps({"id": "long-title", "text": "ok", "title": "t" * 2001}).encode(),
        json.dumps({"id": "big-meta", "text": "ok", "metadata": {"k": "m" * 20_000}}).encode(),
        json.dumps({"id": "typo", "txt": "a typo'd field"}).encode(),
    ]
    lines: list[bytes] = []
    expected: dict[int, str] = {}
    for i, doc in enumerate(valid):
        lines.append(json.dumps(doc).encode())
        if i % 4 == 0 and bad:
            lines.append(b"")  # blank lines are skipped but keep the numbering
            lines.append(bad.pop(0))
            expected[len(lines)] = lines[-1].decode("utf-8", "replace")
    body = b"\n".join(lines) + b"\n"
    assert len(body) > 4096 * 10

    r = gateway.client.post("/v1/collections/bulk/documents/bulk", content=body, headers=NDJSON)
    assert r.status_code == 202, r.text
    job = wait_job(gateway.client, r.json()["job_id"])

    assert job["status"] == "succeeded", job
    assert job["failed"] == len(expected) == 10
    assert job["accepted"] == job["processed"] == len(valid)
    assert {e["line"] for e in job["errors"]} == set(expected)
    by_line = {e["line"]: e for e in job["errors"]}
    reasons = [by_line[n]["error"] for n in sorted(by_line)]
    needles = ["UTF-8", "invalid JSON", "JSON object", "id", "id", "blank", "text: longer", "title: longer"]
    for reason, needle in zip(reasons, [*needles, "metadata:", "txt"], strict=True):
        assert needle in reason, (needle, reason)
    assert {by_line[n]["id"] for n in by_line} >= {"blank-text", "long-text", "long-title", "big-meta", "typo"}
    assert gateway.client.get("/v1/collections/bulk").json()["count"] == len(valid)
    for doc in valid[:3]:
        got = gateway.client.get(f"/v1/collections/bulk/documents/{doc['id']}").json()
        assert got["text"] == doc["text"] and got["title"] == doc["title"]
    assert job["created_at"] <= job["started_at"] <= job["finished_at"] and job["documents_per_second"] > 0


def test_unknown_collection_wrong_type_and_unknown_job(gateway: Gateway):
    c = gateway.client
    r = c.post("/v1/collections/nope/documents/bulk", content=ndjson(scifact(2)), headers=NDJSON)
    assert r.status_code == 404 and r.headers["content-type"] == "application/problem+json"
    assert c.get("/v1/jobs?collection=nope").json() == {"jobs": []}  # nothing was queued
    r = c.post("/v1/collections/bulk/documents/bulk", content=ndjson(scifact(2)), headers={"content-type": "text/csv"})
    assert r.status_code == 415
    assert c.get("/v1/jobs/0123abc").status_code == 404
    assert c.delete("/v1/jobs/0123abc").status_code == 404
    # The body limit still holds everywhere else.
    big = {"documents": [{"id": "x", "text": "y" * 5000}]}
    assert c.post("/v1/collections/bulk/documents", json=big).status_code == 413


def test_jobs_are_listed_newest_first_per_collection(gateway: Gateway):
    c = gateway.client
    c.post("/v1/collections", json={"name": "listing"})
    ids = []
    for n in (1, 2, 3):
        r = c.post("/v1/collections/listing/documents/bulk", content=ndjson(scifact(n, offset=100)), headers=NDJSON)
        ids.append(r.json()["job_id"])
        wait_job(c, ids[-1])
    jobs = c.get("/v1/jobs", params={"collection": "listing"}).json()["jobs"]
    assert [j["job_id"] for j in jobs] == ids[::-1]
    assert [j["processed"] for j in jobs] == [3, 2, 1]
    assert {j["collection"] for j in c.get("/v1/jobs").json()["jobs"]} >= {"listing", "bulk"}


def test_a_separate_worker_against_the_embedded_store_is_refused():
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "QDRANT_PATH": "/tmp/nowhere", "REDIS_URL": "redis://x"}
    done = subprocess.run(
        [sys.executable, "-m", "service.cli", "worker"], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode != 0
    assert "QDRANT_URL" in done.stderr and "embedded store" in done.stderr
