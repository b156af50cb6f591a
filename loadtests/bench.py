"""`make bench`: figures, not assertions. Prints

(a) hot path: p50/p95 of POST /search for a cached think query (and a direct one) against the same embed + Qdrant
    calls made in this process, alternating in the same run, and their ratio (target <= 1.3);
(b) vLLM requests per distinct cold query, at concurrency 1 and 32 (ideal: 1.0);
(c) the gateway's RSS.

Real components: vLLM (CPU build, tiny generated model), the gateway as its own uvicorn process, MiniLM in-process,
embedded Qdrant (:memory:). Run on a quiet machine; the load average is printed beside the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

from service.clients.embedder import LocalEmbedder
from service.clients.vectorstore import StoredDocument, VectorStore
from service.evaluation import read_jsonl
from service.search.profiles import make_profile
from service.settings import Settings
from tests.support.servers import REPO_ROOT, VLLMServer, free_port, rss_bytes, wait_http
from tests.support.tinymodel import build_tiny_model

SCIFACT = REPO_ROOT.parent / "shared" / "data" / "beir" / "scifact"
THINK_ENV = {"THINK_PROFILE": "hyde", "THINK_N": "8", "THINK_MAX_TOKENS": "128"}


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f}"


def pct(samples: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(samples) * 1000, q))


def corpus(n: int) -> list[dict]:
    # Titles only: short texts keep the two ingests (gateway and baseline) quick; search cost is what we measure.
    docs = []
    for d in read_jsonl(SCIFACT / "corpus.jsonl"):
        docs.append({"id": d["_id"], "text": d["title"] or d["text"][:200]})
        if len(docs) == n:
            break
    return docs


def start_gateway(port: int, thinker_url: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, **THINK_ENV, "QDRANT_PATH": ":memory:", "THINKER_URL": thinker_url, "LOG_LEVEL": "WARNING"}
    env.pop("REDIS_URL", None)
    # Same session as this process (no setsid): the kernel's autogroups would otherwise skew the comparison.
    proc = subprocess.Popen(
        [sys.executable, "-m", "service.cli", "serve", "--port", str(port)], env=env, process_group=0
    )
    wait_http(f"http://127.0.0.1:{port}/healthz", 180, proc=proc)
    return proc


def hot_path(base: str, docs: list[dict], rounds: int) -> None:
    client = httpx.Client(base_url=base, timeout=120)
    assert client.post("/v1/collections", json={"name": "bench"}).status_code == 201
    for i in range(0, len(docs), 256):
        client.post("/v1/collections/bench/documents", json={"documents": docs[i : i + 256]}).raise_for_status()

    settings = Settings(_env_file=None, qdrant_path=":memory:", **{k.lower(): v for k, v in THINK_ENV.items()})
    profile = make_profile(settings)
    query = "What is the effect of vitamin D on bone density in older adults?"
    warm = client.post("/v1/collections/bench/search", json={"query": query, "include_thoughts": True}).json()
    thoughts = warm["thoughts"]
    assert warm["mode"] == "think", warm

    async def baseline() -> tuple[list[float], list[float]]:
        # The same work the gateway does after a cache hit, called directly: embed [query + thoughts], fuse, search.
        embedder = LocalEmbedder(None, settings.embedder_batch_size)
        store = VectorStore.connect(url=None, api_key=None, path=":memory:", timeout_s=10)
        await store.create("bench", await embedder.dimension(), embedder=embedder.name, profile=profile.name)
        stored = [StoredDocument(d["id"], d["text"], "", {}) for d in docs]
        await store.upsert("bench", stored, await embedder.embed([d.text for d in stored], documents=True))

        async def once(texts: list[str]) -> float:
            t0 = time.perf_counter()
            vector = profile.fuse(await embedder.embed(texts))
            await store.search("bench", vector, 10)
            return time.perf_counter() - t0

        think_in, direct_in = [], []
        for _ in range(3):
            await once(profile.query_texts(query, thoughts))
        for _ in range(rounds):
            http_think.append(
                timed(
                    lambda: (
                        client.post("/v1/collections/bench/search", json={"query": query}).json()["thought_cache"]
                        == "hit"
                    )
                )
            )
            think_in.append(await once(profile.query_texts(query, thoughts)))
            http_direct.append(
                timed(
                    lambda: (
                        client.post("/v1/collections/bench/search", json={"query": query, "think": False}).json()[
                            "mode"
                        ]
                        == "direct"
                    )
                )
            )
            direct_in.append(await once(profile.query_texts(query, None)))
        await embedder.aclose()
        return think_in, direct_in

    def timed(call) -> float:
        t0 = time.perf_counter()
        ok = call()
        elapsed = time.perf_counter() - t0
        assert ok, "unexpected search outcome"
        return elapsed

    http_think: list[float] = []
    http_direct: list[float] = []
    for _ in range(3):
        client.post("/v1/collections/bench/search", json={"query": query})
    think_in, direct_in = asyncio.run(baseline())

    print(f"\n(a) hot path, {rounds} alternating rounds, {len(docs)} docs, {len(thoughts)} cached thoughts ({load()})")
    print(f"    {'':28} {'p50 ms':>9} {'p95 ms':>9}")
    for label, http, inproc in (("think, cached", http_think, think_in), ("direct", http_direct, direct_in)):
        print(f"    {label + ' via HTTP /search':28} {pct(http, 50):9.2f} {pct(http, 95):9.2f}")
        print(f"    {label + ' in-process':28} {pct(inproc, 50):9.2f} {pct(inproc, 95):9.2f}")
        ratio50, ratio95 = pct(http, 50) / pct(inproc, 50), pct(http, 95) / pct(inproc, 95)
        print(f"    {label + ' ratio':28} {ratio50:9.3f} {ratio95:9.3f}")


def cold_queries(base: str, vllm: VLLMServer, distinct: int, repeats: int) -> None:
    print(f"\n(b) vLLM requests per distinct cold query ({distinct} distinct queries x {repeats} sends each)")
    for concurrency in (1, 32):
        tag = f"c{concurrency}-{random.randrange(10**6)}"
        sends = [f"bench question {i} {tag}" for i in range(distinct) for _ in range(repeats)]
        random.shuffle(sends)
        before = vllm.completion_requests()

        async def fire(sends: list[str], concurrency: int) -> dict[str, int]:
            states: dict[str, int] = {}
            gate = asyncio.Semaphore(concurrency)
            async with httpx.AsyncClient(base_url=base, timeout=300) as client:

                async def one(q: str) -> None:
                    async with gate:
                        r = await client.post("/v1/collections/bench/search", json={"query": q})
                    body = r.json()
                    key = f"{body['thought_cache']}{' degraded' if body['degraded'] else ''}"
                    states[key] = states.get(key, 0) + 1

                await asyncio.gather(*(one(q) for q in sends))
            return states

        t0 = time.perf_counter()
        states = asyncio.run(fire(sends, concurrency))
        elapsed = time.perf_counter() - t0
        time.sleep(0.5)  # vLLM counts a request just after its last byte
        made = vllm.completion_requests() - before
        print(
            f"    concurrency {concurrency:>2}: {made} vLLM requests / {distinct} distinct = {made / distinct:.2f}"
            f"   ({len(sends)} searches in {elapsed:.1f} s; {states}; {load()})"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=60)
    parser.add_argument("--distinct", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=4)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        model = build_tiny_model(Path(tmp) / "tiny")
        with VLLMServer(model, "tiny-think") as vllm:
            port = free_port()
            gateway = start_gateway(port, vllm.base_url)
            try:
                base = f"http://127.0.0.1:{port}"
                hot_path(base, corpus(args.docs), args.rounds)
                cold_queries(base, vllm, args.distinct, args.repeats)
                rss_mb = rss_bytes([gateway.pid]) / 2**20
                print(f"\n(c) gateway RSS (local MiniLM embedder, {args.docs} docs): {rss_mb:.0f} MB")
            finally:
                gateway.terminate()
                gateway.wait(30)


if __name__ == "__main__":
    main()
