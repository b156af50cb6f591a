"""Snapshot and restore of SciFact on the Edge store: figures, not assertions. Prints

- the ingest of the corpus (5,183 documents) through the bulk API, once;
- the time of `POST /v1/collections/{name}/snapshots` (201: the file is complete) and the snapshot's size, beside
  the collection's folder on disk;
- the time of a restore from that snapshot after the collection is deleted (202 to the job `succeeded`), and with
  replace over it; then checks the restored collection answers the same searches.

The gateway runs as its own process with the embedded defaults (Qdrant Edge in a temporary folder, in-process queue
and worker). The load average is printed beside every figure.

    .venv/bin/python -m loadtests.snapshot_bench [--docs N] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from service.tools.evaluation import read_jsonl
from tests.support.servers import REPO_ROOT, free_port, wait_http

SCIFACT = REPO_ROOT.parent / "shared" / "data" / "beir" / "scifact"
NDJSON = {"content-type": "application/x-ndjson"}
QUERIES = ["vitamin D and bone density", "tumour suppressor genes", "antibiotic resistance in bacteria"]


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f}"


def corpus(n: int | None) -> bytes:
    lines = []
    for i, d in enumerate(read_jsonl(SCIFACT / "corpus.jsonl")):
        if n is not None and i >= n:
            break
        lines.append(json.dumps({"id": d["_id"], "title": d["title"], "text": d["text"]}))
    return ("\n".join(lines) + "\n").encode()


def disk_usage(folder: Path) -> int:
    return sum(p.stat().st_blocks * 512 for p in folder.rglob("*") if p.is_file())


def wait_job(client: httpx.Client, job_id: str) -> dict:
    while True:
        job = client.get(f"/v1/jobs/{job_id}").json()
        if job["status"] not in ("queued", "running"):
            return job
        time.sleep(0.1)


def searches(client: httpx.Client, name: str) -> list[list[str]]:
    found = []
    for query in QUERIES:
        body = {"query": query, "top_k": 10, "think": False, "retrieval": "dense"}
        found.append([h["id"] for h in client.post(f"/v1/collections/{name}/search", json=body).json()["results"]])
    return found


def restore(client: httpx.Client, name: str, body: dict) -> tuple[float, dict]:
    started = time.perf_counter()
    r = client.post(f"/v1/collections/{name}/restore", json=body)
    assert r.status_code == 202, r.text
    job = wait_job(client, r.json()["job_id"])
    return time.perf_counter() - started, job


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=None, help="the first N documents (default: all 5,183)")
    parser.add_argument("--keep", default=None, help="keep the store and snapshots in this folder")
    args = parser.parse_args()
    root = Path(args.keep or tempfile.mkdtemp(prefix="snapshot-bench-"))
    port = free_port()
    env = {
        **os.environ,
        "QDRANT_PATH": str(root / "qdrant"),
        "SNAPSHOT_PATH": str(root / "snapshots"),
        "LOG_LEVEL": "WARNING",
        "PYTHONPATH": str(REPO_ROOT),
    }
    for key in ("REDIS_URL", "THINKER_URL", "QDRANT_URL"):
        env.pop(key, None)
    proc = subprocess.Popen([sys.executable, "-m", "service.cli", "serve", "--port", str(port)], env=env)
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", timeout=180, proc=proc)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=600) as client:
            run(client, root, args.docs)
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)


def run(client: httpx.Client, root: Path, docs: int | None) -> None:
    assert client.post("/v1/collections", json={"name": "scifact"}).status_code == 201
    body = corpus(docs)
    started = time.perf_counter()
    r = client.post("/v1/collections/scifact/documents/bulk", content=body, headers=NDJSON)
    job = wait_job(client, r.json()["job_id"])
    count = client.get("/v1/collections/scifact").json()["count"]
    print(f"ingest: {count} documents in {time.perf_counter() - started:.1f}s ({job['status']}); {load()}")
    before = searches(client, "scifact")
    folder = root / "qdrant" / "scifact"
    print(f"collection folder: {disk_usage(folder) / 1e6:.1f} MB on disk")

    for attempt in range(3):
        started = time.perf_counter()
        r = client.post("/v1/collections/scifact/snapshots")
        elapsed = time.perf_counter() - started
        assert r.status_code == 201, r.text
        snapshot = r.json()
        print(
            f"snapshot {attempt + 1}: {elapsed:.2f}s, {snapshot['size_bytes'] / 1e6:.1f} MB, "
            f"{snapshot['count']} documents; {load()}"
        )

    # A snapshot is restored under its own collection's name: once after the collection is deleted, once over it.
    assert client.delete("/v1/collections/scifact").status_code == 204
    elapsed, job = restore(client, "scifact", {"snapshot": snapshot["snapshot"]})
    print(
        f"restore (deleted collection): {elapsed:.2f}s, {job['status']}, {job['restore']['count']} documents; {load()}"
    )
    elapsed, job = restore(client, "scifact", {"snapshot": snapshot["snapshot"], "replace": True})
    print(f"restore (replace): {elapsed:.2f}s, {job['status']}, {job['restore']['count']} documents; {load()}")
    print(f"searches after restore identical: {searches(client, 'scifact') == before}")


if __name__ == "__main__":
    main()
