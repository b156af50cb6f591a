"""`make bench` (ingestion half): figures, not assertions. Prints

(a) ingest throughput through the bulk API (upload to job `succeeded`, documents/s) beside the embedder's own
    throughput on the same documents in this process, and their ratio (target >= 0.9 with the in-process
    embedder), alternating the two measurements;
(b) search p50 while a large bulk job runs beside idle p50.

The gateway runs as its own process with the embedded defaults (in-process queue and worker, qdrant-client local
mode in memory) unless --redis is given. The load average is printed beside every figure.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time

import httpx
import numpy as np

from service.model.profiles import make_profile
from service.settings import Settings
from service.tools.evaluation import read_jsonl
from service.wiring import open_embedder
from tests.support.servers import REPO_ROOT, free_port, wait_http

SCIFACT = REPO_ROOT.parent / "shared" / "data" / "beir" / "scifact"
NDJSON = {"content-type": "application/x-ndjson"}


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f}"


def corpus(n: int, offset: int = 0) -> list[dict]:
    docs = []
    for i, d in enumerate(read_jsonl(SCIFACT / "corpus.jsonl")):
        if i >= offset:
            docs.append({"id": d["_id"], "title": d["title"], "text": d["text"]})
        if len(docs) == n:
            break
    return docs


def start_gateway(port: int, redis_url: str | None) -> subprocess.Popen[bytes]:
    env = {**os.environ, "QDRANT_PATH": ":memory:", "LOG_LEVEL": "WARNING", "PYTHONPATH": str(REPO_ROOT)}
    env.pop("REDIS_URL", None)
    env.pop("THINKER_URL", None)
    if redis_url:
        env["REDIS_URL"] = redis_url
    # Same session as this process (no setsid), so the kernel's autogroups do not skew the comparison.
    proc = subprocess.Popen(
        [sys.executable, "-m", "service.cli", "serve", "--port", str(port)], env=env, process_group=0
    )
    wait_http(f"http://127.0.0.1:{port}/healthz", 180, proc=proc)
    return proc


def embedder_throughput(docs: list[dict], batch: int) -> float:
    """The embedder alone on the same texts, the way the worker feeds it (batches of INGEST_BATCH_SIZE)."""
    settings = Settings(_env_file=None)
    profile = make_profile(settings)
    texts = [profile.document_text(d["title"], d["text"]) for d in docs]
    embedder = asyncio.run(open_embedder(settings))  # the in-process embedder of EMBEDDER_BACKEND

    async def run() -> float:
        await embedder.embed(texts[:16], documents=True)  # warm-up
        started = time.perf_counter()
        for i in range(0, len(texts), batch):
            await embedder.embed(texts[i : i + batch], documents=True)
        return len(texts) / (time.perf_counter() - started)

    try:
        return asyncio.run(run())
    finally:
        asyncio.run(embedder.aclose())


def bulk_job(client: httpx.Client, collection: str, docs: list[dict]) -> str:
    body = "".join(json.dumps(d) + "\n" for d in docs).encode()
    r = client.post(f"/v1/collections/{collection}/documents/bulk", content=body, headers=NDJSON)
    r.raise_for_status()
    return r.json()["job_id"]


def wait_job(client: httpx.Client, job_id: str) -> dict:
    while True:
        job = client.get(f"/v1/jobs/{job_id}").json()
        if job["status"] not in ("queued", "running"):
            return job
        time.sleep(0.2)


def bulk_throughput(client: httpx.Client, collection: str, docs: list[dict]) -> float:
    client.post("/v1/collections", json={"name": collection}).raise_for_status()
    started = time.perf_counter()
    job = wait_job(client, bulk_job(client, collection, docs))
    assert job["status"] == "succeeded" and job["processed"] == len(docs), job
    return len(docs) / (time.perf_counter() - started)


def search_p50(client: httpx.Client, queries: list[str], collection: str, until=None) -> tuple[float, int, str]:
    """p50 of the client-side latency, its count, and the p50 of the server's own timings (where the time goes)."""
    samples = []
    parts: dict[str, list[float]] = {}
    for i, q in enumerate(queries):
        started = time.perf_counter()
        r = client.post(f"/v1/collections/{collection}/search", json={"query": q, "think": False})
        r.raise_for_status()
        samples.append(time.perf_counter() - started)
        for name, ms in r.json().get("timings_ms", {}).items():
            parts.setdefault(name, []).append(ms)
        if until is not None and until() and i >= 5:
            break
    server = ", ".join(f"{k} {np.percentile(v, 50):.1f}" for k, v in parts.items() if k in ("embed", "search", "total"))
    return float(np.percentile(np.asarray(samples) * 1000, 50)), len(samples), f"server p50 ms: {server}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--docs", type=int, default=600, help="documents per throughput run")
    parser.add_argument("--rounds", type=int, default=2, help="alternating embedder/bulk rounds (0: search only)")
    parser.add_argument("--redis", default=None, help="REDIS_URL for the gateway (default: in-process queue)")
    args = parser.parse_args()

    settings = Settings(_env_file=None)
    port = free_port()
    gateway = start_gateway(port, args.redis)
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=300)
    try:
        print(f"ingest bench: {args.docs} SciFact documents (title + full abstract) per run; {load()}")
        ratios = []
        for r in range(args.rounds):
            docs = corpus(args.docs, offset=r * args.docs)
            base = embedder_throughput(docs, settings.ingest_batch_size)
            print(f"  round {r + 1}: embedder alone   {base:7.1f} docs/s   ({load()})")
            bulk = bulk_throughput(client, f"tp{r}", docs)
            print(f"  round {r + 1}: bulk API job     {bulk:7.1f} docs/s   ({load()})")
            ratios.append(bulk / base)
            print(f"  round {r + 1}: ratio bulk/embedder {bulk / base:.2f}")
        if ratios:
            median = np.median(ratios)
            print(f"ingest throughput ratio (bulk API / embedder alone): median {median:.2f} (target >= 0.9)")

        # Distinct queries throughout: a repeated query is answered from the gateway's query-vector cache and
        # would hide what a search waits for during an ingest.
        queries = list(dict.fromkeys(d["title"] for d in corpus(1183, offset=4000)))
        client.post("/v1/collections", json={"name": "idle"})
        wait_job(client, bulk_job(client, "idle", corpus(200, offset=4000)))
        idle, n_idle, parts = search_p50(client, queries[:60], "idle")
        print(f"search p50 idle:         {idle:7.1f} ms over {n_idle} searches; {parts} ({load()})")
        client.post("/v1/collections", json={"name": "busy"})
        job_id = bulk_job(client, "busy", corpus(args.docs * 2, offset=0))
        done = lambda: client.get(f"/v1/jobs/{job_id}").json()["status"] != "running"  # noqa: E731
        busy, n_busy, parts = search_p50(client, queries[60:], "idle", until=done)
        print(f"search p50 during ingest: {busy:7.1f} ms over {n_busy} searches; {parts} ({load()})")
        print(f"search p50 ratio during ingest / idle: {busy / idle:.2f}")
        wait_job(client, job_id)
    finally:
        client.close()
        gateway.terminate()
        gateway.wait(timeout=30)


if __name__ == "__main__":
    main()
