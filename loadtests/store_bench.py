"""`make bench` (store part): the two embedded backends side by side, figures not assertions. Prints, with the load
average beside every figure,

(a) 100k synthetic normalised 384-dim points: upsert rate, Edge's background HNSW build time, search and filtered
    search p50 (top 10, 30 queries; the filter keeps 10% of the points) on Qdrant Edge and on qdrant-client's local
    mode, their ratio, and Edge's recall@10 against exact search;
(b) SciFact (5,183 docs, real MiniLM embeddings): the same p50s, and recall@10 of Edge against exact search, as
    served by default (a collection this small is scanned exactly) and with the HNSW index forced.

    python -m loadtests.store_bench            # 100k + SciFact (several minutes: embedding SciFact dominates)
    python -m loadtests.store_bench --quick    # 10k synthetic + 300 SciFact docs, for development
    python -m loadtests.store_bench --skip-scifact --points 40000   # the build-time search pause, in ~3 minutes
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import numpy as np

from service.model.documents import StoredDocument
from service.settings import Settings
from service.store.base import Store
from service.store.edge.store import EdgeStore
from service.store.qdrant import VectorStore
from service.tools.evaluation import read_jsonl
from service.wiring import open_embedder

SCIFACT = Path(__file__).resolve().parents[2] / "shared" / "data" / "beir" / "scifact"
LANGS = [f"l{i}" for i in range(10)]  # a filter on one keeps 10% of the points
QUERIES = 30
BATCH = 1000


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load {one:.2f} {five:.2f} {fifteen:.2f}"


def synthetic(n: int, dim: int = 384, seed: int = 0) -> np.ndarray:
    vectors = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def exact_top10(corpus: np.ndarray, queries: np.ndarray) -> list[set[int]]:
    scores = queries @ corpus.T
    return [set(np.argsort(-row)[:10].tolist()) for row in scores]


async def p50_ms(fn: Callable[[], Awaitable[object]], n: int = QUERIES) -> float:
    await fn()  # warm-up
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        await fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000


async def fill(store: Store, vectors: np.ndarray, texts: list[str] | None = None) -> float:
    """Upserts every vector; returns points per second."""
    await store.create("bench", vectors.shape[1], embedder="bench", profile="bench")
    t0 = time.perf_counter()
    for start in range(0, len(vectors), BATCH):
        stop = min(start + BATCH, len(vectors))
        docs = [
            StoredDocument(str(i), texts[i] if texts else "", "", {"lang": LANGS[i % len(LANGS)], "n": i})
            for i in range(start, stop)
        ]
        await store.upsert("bench", docs, vectors[start:stop])
    return len(vectors) / (time.perf_counter() - t0)


async def measure(store: Store, vectors: np.ndarray, queries: np.ndarray) -> dict[str, float]:
    it = iter(range(10**9))

    def query() -> np.ndarray:
        return queries[next(it) % len(queries)]

    return {
        "search": await p50_ms(lambda: store.search("bench", query(), 10)),
        "filtered": await p50_ms(lambda: store.search("bench", query(), 10, {"lang": "l3"})),
    }


async def searches_while(work: Awaitable[None], store: Store, queries: np.ndarray) -> list[float]:
    """Search latencies (ms) while `work` (the background index build) runs: does the build stall searches?"""
    task = asyncio.ensure_future(work)
    times: list[float] = []
    while not task.done():
        t0 = time.perf_counter()
        await store.search("bench", queries[len(times) % len(queries)], 10, {"lang": "l3"})
        times.append((time.perf_counter() - t0) * 1000)
        await asyncio.sleep(0.05)
    await task
    return times


async def recall(store: Store, corpus: np.ndarray, queries: np.ndarray, hnsw_ef: int | None = None) -> float:
    truth = exact_top10(corpus, queries)
    found = 0
    for q, expected in zip(queries, truth, strict=True):
        hits = await store.search("bench", q, 10, hnsw_ef=hnsw_ef)
        found += len({int(h.document.id) for h in hits} & expected)
    return found / (10 * len(queries))


async def compare(title: str, vectors: np.ndarray, queries: np.ndarray, texts: list[str] | None = None) -> None:
    print(f"\n== {title}: {len(vectors):,} points, dim {vectors.shape[1]} ==", flush=True)
    with tempfile.TemporaryDirectory(prefix="store-bench-") as folder:
        edge = EdgeStore(folder)
        rate = await fill(edge, vectors, texts)
        print(f"edge   upsert {rate:9,.0f} points/s   ({load()})", flush=True)
        t0 = time.perf_counter()
        during = await searches_while(edge.wait_for_index(), edge, queries)
        points, indexed, segments = await edge.shard_info("bench")
        build = time.perf_counter() - t0
        print(f"edge   HNSW build after the last upsert {build:6.1f} s: {indexed:,}/{points:,} indexed   ({load()})")
        if during:
            print(
                f"edge   {len(during)} searches during the build: p50 {statistics.median(during):.2f} ms,"
                f" p99 {np.percentile(during, 99):.1f} ms, max {max(during):.1f} ms   ({load()})"
            )
        # A shard just swapped in after a build reads its graph and payload from disk on first touch: warm it
        # (as traffic would) so the p50s below are the steady state, not page faults.
        for warm in synthetic(200, vectors.shape[1], seed=2):
            await edge.search("bench", warm, 10)
            await edge.search("bench", warm, 10, {"lang": "l3"})
        edge_ms = await measure(edge, vectors, queries)
        edge_recall = await recall(edge, vectors, queries)
        print(f"edge   recall@10 vs exact {edge_recall:.3f} (as served)   ({load()})", flush=True)
        if indexed:
            for ef in (128, 512):
                value = await recall(edge, vectors, queries, hnsw_ef=ef)
                print(f"edge   recall@10 vs exact {value:.3f} (hnsw_ef={ef})   ({load()})", flush=True)
        if indexed == 0:  # small: scanned exactly; show what the HNSW graph alone would give
            forced = EdgeStore(Path(folder) / "forced", index_threshold=1, full_scan_threshold_kb=1)
            await fill(forced, vectors, texts)
            await forced.wait_for_index()
            points, indexed, _ = await forced.shard_info("bench")
            print(f"edge   HNSW forced (no exact scan of small segments): {indexed:,}/{points:,} indexed")
            for ef in (None, 128):
                value = await recall(forced, vectors, queries, hnsw_ef=ef)
                print(f"edge   recall@10 vs exact {value:.3f} (HNSW forced, hnsw_ef={ef or 'default'})   ({load()})")
            await forced.aclose()
        await edge.aclose()

    local = VectorStore.connect(url=None, api_key=None, path=":memory:", timeout_s=60)
    rate = await fill(local, vectors, texts)
    print(f"local  upsert {rate:9,.0f} points/s   ({load()})", flush=True)
    local_ms = await measure(local, vectors, queries)
    await local.aclose()
    print(f"{'p50 ms, top 10':<22}{'edge':>10}{'local':>10}{'local/edge':>12}")
    for key in ("search", "filtered"):
        print(
            f"{key:<22}{edge_ms[key]:>10.2f}{local_ms[key]:>10.2f}{local_ms[key] / edge_ms[key]:>11.1f}x   ({load()})"
        )


def scifact(limit: int | None, cache: Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """SciFact's corpus and first queries embedded by MiniLM; kept in `cache` (minutes of CPU on 2 cores)."""
    docs = [d for _, d in zip(range(limit or 10**9), read_jsonl(SCIFACT / "corpus.jsonl"), strict=False)]
    queries = [q["text"] for _, q in zip(range(QUERIES), read_jsonl(SCIFACT / "queries.jsonl"), strict=False)]
    # As the service embeds a document (profiles.document_text): title + " " + text.
    texts = [f"{d['title']} {d['text']}" if d.get("title") else d["text"] for d in docs]
    path = cache / f"scifact-minilm-{len(docs)}.npz"
    if path.exists():
        saved = np.load(path)
        print(f"SciFact: {len(docs):,} doc embeddings from {path}")
        return saved["corpus"], saved["queries"], texts
    embedder = asyncio.run(open_embedder(Settings(_env_file=None, embedder_url=None, embedder_batch_size=16)))
    t0 = time.perf_counter()
    corpus = np.asarray(asyncio.run(embedder.embed(texts, documents=True)), np.float32)
    print(f"SciFact: embedded {len(texts):,} docs in {time.perf_counter() - t0:.0f} s   ({load()})", flush=True)
    query_vectors = np.asarray(asyncio.run(embedder.embed(queries)), np.float32)
    cache.mkdir(parents=True, exist_ok=True)
    np.savez(path, corpus=corpus, queries=query_vectors)
    return corpus, query_vectors, texts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="10k synthetic points and 300 SciFact docs")
    parser.add_argument("--points", type=int, default=None, help="synthetic points (default 100,000)")
    parser.add_argument("--skip-scifact", action="store_true")
    parser.add_argument("--skip-synthetic", action="store_true")
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "thinksearch", help="embeddings cache")
    args = parser.parse_args()
    n = args.points or (10_000 if args.quick else 100_000)
    print(f"store bench: Qdrant Edge vs qdrant-client local mode, {os.cpu_count()} CPUs   ({load()})")
    if not args.skip_synthetic:
        asyncio.run(compare("synthetic", synthetic(n), synthetic(QUERIES, seed=1)))
    if not args.skip_scifact and SCIFACT.exists():
        corpus, queries, texts = scifact(300 if args.quick else None, args.cache)
        asyncio.run(compare("SciFact (MiniLM)", corpus, queries, texts))


if __name__ == "__main__":
    main()
