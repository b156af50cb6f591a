"""`make bench` (part): the latency cost of hybrid retrieval against dense on the same collection.

A gateway of its own (own process, Qdrant Edge in a temporary folder, no thinker) is loaded with SciFact documents
through the REST API; then each SciFact test query is searched in dense, sparse and hybrid mode, the modes
interleaved (rotating order) so that load on the shared machine falls on all three alike. Every query is searched
once beforehand, so its embedding comes from the query-vector cache in every mode: the figures compare the search
itself (plus HTTP), not the embedder. Prints p50/p95 of the round trip and of the server's `search` stage per mode,
and the ratios hybrid p50 / dense p50, with the load average.

    python -m loadtests.hybrid_bench [--docs 1000] [--queries 300]
    python -m loadtests.hybrid_bench --url http://127.0.0.1:8711 --collection scifact   # an already loaded one
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

import httpx
import numpy as np

from service.tools.evaluation import read_jsonl
from tests.support.servers import REPO_ROOT, free_port, wait_http

SCIFACT = REPO_ROOT.parent / "shared" / "data" / "beir" / "scifact"
MODES = ("dense", "sparse", "hybrid")


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load {one:.2f} {five:.2f} {fifteen:.2f}"


def start_gateway(port: int, store: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "QDRANT_PATH": store, "LOG_LEVEL": "WARNING"}
    for name in ("REDIS_URL", "THINKER_URL", "QDRANT_URL", "EMBEDDER_URL", "API_KEYS"):
        env.pop(name, None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "service.cli", "serve", "--port", str(port)], env=env, process_group=0
    )
    wait_http(f"http://127.0.0.1:{port}/healthz", 180, proc=proc)
    return proc


def ingest(http: httpx.Client, collection: str, n: int) -> None:
    assert http.post("/v1/collections", json={"name": collection}).status_code == 201
    batch: list[dict] = []
    started = time.perf_counter()
    for i, d in enumerate(read_jsonl(SCIFACT / "corpus.jsonl")):
        if i == n:
            break
        batch.append({"id": d["_id"], "title": d.get("title", ""), "text": d["text"]})
        if len(batch) == 64:
            http.post(f"/v1/collections/{collection}/documents", json={"documents": batch}).raise_for_status()
            batch = []
    if batch:
        http.post(f"/v1/collections/{collection}/documents", json={"documents": batch}).raise_for_status()
    print(f"ingested {n} SciFact documents in {time.perf_counter() - started:.0f}s ({load()})", flush=True)


def measure(http: httpx.Client, collection: str, queries: list[str]) -> dict[str, dict[str, list[float]]]:
    url = f"/v1/collections/{collection}/search"
    for q in queries:  # warm: every query's vector is in the query-vector cache before timing
        http.post(url, json={"query": q, "retrieval": "dense", "think": False}).raise_for_status()
    samples: dict[str, dict[str, list[float]]] = {m: {"round_trip": [], "search": []} for m in MODES}
    for i, q in enumerate(queries):
        for mode in MODES[i % 3 :] + MODES[: i % 3]:
            t0 = time.perf_counter()
            r = http.post(url, json={"query": q, "retrieval": mode, "think": False, "top_k": 10})
            elapsed = (time.perf_counter() - t0) * 1000
            r.raise_for_status()
            body = r.json()
            assert body["retrieval"] == mode, body["retrieval"]
            samples[mode]["round_trip"].append(elapsed)
            samples[mode]["search"].append(body["timings_ms"]["search"])
    return samples


def report(samples: dict[str, dict[str, list[float]]], collection: str, count: int) -> None:
    print(f"\nhybrid vs dense on collection {collection!r} ({count} documents), {load()}")
    print(f"{'mode':<8} {'round trip p50':>15} {'p95':>8} {'search stage p50':>17} {'p95':>8}   (ms)")
    p50 = {}
    for mode in MODES:
        rt, st = np.asarray(samples[mode]["round_trip"]), np.asarray(samples[mode]["search"])
        p50[mode] = (float(np.percentile(rt, 50)), float(np.percentile(st, 50)))
        print(
            f"{mode:<8} {p50[mode][0]:>15.2f} {np.percentile(rt, 95):>8.2f} "
            f"{p50[mode][1]:>17.2f} {np.percentile(st, 95):>8.2f}"
        )
    print(
        f"hybrid p50 / dense p50: round trip {p50['hybrid'][0] / p50['dense'][0]:.2f}x, "
        f"search stage {p50['hybrid'][1] / p50['dense'][1]:.2f}x ({load()})"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=1000, help="SciFact documents to load (own gateway)")
    parser.add_argument("--queries", type=int, default=300, help="SciFact test queries, each in the three modes")
    parser.add_argument("--url", default=None, help="a running gateway with the collection loaded")
    parser.add_argument("--collection", default="hybrid_bench")
    args = parser.parse_args(argv)
    queries = [q["text"] for q in read_jsonl(SCIFACT / "queries.jsonl")][: args.queries]
    proc = None
    with tempfile.TemporaryDirectory(prefix="hybrid-bench-") as store:
        try:
            url = args.url
            if url is None:
                port = free_port()
                proc = start_gateway(port, store)
                url = f"http://127.0.0.1:{port}"
            with httpx.Client(base_url=url, timeout=120) as http:
                if args.url is None:
                    ingest(http, args.collection, args.docs)
                count = http.get(f"/v1/collections/{args.collection}").json()["count"]
                report(measure(http, args.collection, queries), args.collection, count)
        finally:
            if proc is not None:
                proc.terminate()
                proc.wait(30)


if __name__ == "__main__":
    main()
