"""`make bench` (embedder half): the in-process embedder on torch against ONNX Runtime, in one run, alternating.
Figures, not assertions (ratios are what count on 2 shared cores). Prints

(a) the embedder alone, in this process, both lanes as the service uses them: one query, a think query's texts at
    n=8 (the query and eight thought-sized texts), a batch of 64 documents (title + abstract);
(b) per backend a gateway of its own (`thinksearch serve`, EMBEDDER_BACKEND=torch|onnx, Qdrant Edge in a
    temporary folder, the query-vector cache off so every search embeds): bulk ingestion docs/s of the same
    SciFact documents, direct dense search HTTP p50 at concurrency 1, 4 and 16, and the gateway's RSS.

The load average is printed beside every figure. `--quick` for a short trial.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx

from loadtests.ingest_bench import SCIFACT, bulk_job, corpus, wait_job
from service.clients.local_embedder import LocalEmbedder
from service.clients.onnx_embedder import OnnxEmbedder
from service.tools.evaluation import read_jsonl
from tests.support.gateway import spawn_gateway
from tests.support.onnxmodel import ensure_onnx_model
from tests.support.servers import free_port

BACKENDS = ("torch", "onnx")
CONCURRENCY = (1, 4, 16)
THINK_N = 8
THOUGHT_CHARS = 600  # about what a 128-token thought is in characters


def load() -> str:
    return "load {:.2f} {:.2f} {:.2f}".format(*os.getloadavg())


def _queries() -> list[str]:
    return [q["text"] for q in read_jsonl(SCIFACT / "queries.jsonl")]


def _order(round_: int) -> tuple[str, ...]:
    """Alternate which backend goes first, so a drift in the machine's load favours neither."""
    return BACKENDS if round_ % 2 == 0 else BACKENDS[::-1]


async def _median_ms(call: Callable[[], Awaitable[object]], repeats: int) -> float:
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        await call()
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples)


def embedder_alone(rounds: int, repeats: int) -> list[tuple[str, dict[str, float], str]]:
    docs = corpus(64 * rounds + 64)
    texts = [f"{d['title']} {d['text']}" for d in docs]
    queries = _queries()
    embedders = {"torch": LocalEmbedder(None, 16), "onnx": OnnxEmbedder(None, 16)}
    samples: dict[str, dict[str, list[float]]] = {b: {} for b in BACKENDS}
    loads: dict[str, list[float]] = {}

    async def run() -> None:
        for e in embedders.values():  # warm-up: first calls build caches and thread pools
            await e.embed(texts[:16], documents=True)
            await e.embed(queries[:9])
        for r in range(rounds):
            query = queries[r]
            think = [query, *(t[:THOUGHT_CHARS] for t in texts[r * 8 : r * 8 + THINK_N])]
            batch = texts[64 + r * 64 : 128 + r * 64]
            for backend in _order(r):
                e = embedders[backend]
                measures = {
                    "one query": _median_ms(lambda e=e, q=query: e.embed([q]), repeats),
                    f"think query, {THINK_N + 1} texts": _median_ms(lambda e=e, t=think: e.embed(t), repeats),
                    "64 documents (document lane)": _median_ms(lambda e=e, b=batch: e.embed(b, documents=True), 1),
                }
                for name, measure in measures.items():
                    samples[backend].setdefault(name, []).append(await measure)
                    loads.setdefault(name, []).append(os.getloadavg()[0])

    try:
        asyncio.run(run())
    finally:
        for e in embedders.values():
            asyncio.run(e.aclose())
    rows = []
    for name in samples["onnx"]:
        medians = {b: statistics.median(samples[b][name]) for b in BACKENDS}
        rows.append((name, medians, f"load {statistics.mean(loads[name]):.2f}"))
    return rows


class Backend:
    def __init__(self, name: str, store: Path) -> None:
        self.name = name
        self.port = free_port()
        env = {
            "EMBEDDER_BACKEND": name,
            "QDRANT_PATH": str(store / name),
            "QUERY_VECTOR_CACHE_SIZE": "0",  # every search embeds its query
            "LOG_LEVEL": "WARNING",
        }
        self.proc = spawn_gateway(self.port, env)
        self.client = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=300)

    def bulk(self, collection: str, docs: list[dict]) -> float:
        self.client.post("/v1/collections", json={"name": collection}).raise_for_status()
        started = time.perf_counter()
        job = wait_job(self.client, bulk_job(self.client, collection, docs))
        assert job["status"] == "succeeded" and job["processed"] == len(docs), job
        return len(docs) / (time.perf_counter() - started)

    def search_p50(self, collection: str, queries: list[str], concurrency: int) -> float:
        async def run() -> list[float]:
            gate = asyncio.Semaphore(concurrency)
            samples: list[float] = []
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{self.port}", timeout=120) as client:

                async def one(q: str) -> None:
                    async with gate:
                        started = time.perf_counter()
                        body = {"query": q, "think": False, "retrieval": "dense", "top_k": 10}
                        r = await client.post(f"/v1/collections/{collection}/search", json=body)
                        r.raise_for_status()
                        samples.append((time.perf_counter() - started) * 1000)

                await asyncio.gather(*(one(q) for q in queries))
            return samples

        return statistics.median(asyncio.run(run()))

    def rss_mib(self) -> tuple[float, float]:
        """(VmRSS, VmHWM) of the gateway process in MiB."""
        status = dict(
            line.split(":", 1) for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines() if ":" in line
        )
        return tuple(int(status[k].split()[0]) / 1024 for k in ("VmRSS", "VmHWM"))  # type: ignore[return-value]

    def close(self) -> None:
        self.client.close()
        self.proc.terminate()
        self.proc.wait(timeout=60)


def through_gateways(docs: int, rounds: int, searches: int) -> list[tuple[str, dict[str, float], str]]:
    documents = corpus(docs)
    queries = _queries()
    rows: list[tuple[str, dict[str, float], str]] = []
    with tempfile.TemporaryDirectory(prefix="embed-bench-") as store:
        gateways = {b: Backend(b, Path(store)) for b in BACKENDS}
        try:
            rss_idle = {b: g.rss_mib()[0] for b, g in gateways.items()}
            rows.append(("gateway RSS after startup (MiB)", rss_idle, load()))
            ingest: dict[str, list[float]] = {b: [] for b in BACKENDS}
            loads = []
            for r in range(rounds):
                for backend in _order(r):
                    ingest[backend].append(gateways[backend].bulk(f"bulk{r}", documents))
                    loads.append(os.getloadavg()[0])
            medians = {b: statistics.median(v) for b, v in ingest.items()}
            rows.append((f"bulk ingest docs/s ({docs} SciFact docs)", medians, f"load {statistics.mean(loads):.2f}"))
            stream = itertools.cycle(queries)
            for concurrency in CONCURRENCY:
                p50s: dict[str, list[float]] = {b: [] for b in BACKENDS}
                loads = []
                for r in range(rounds):
                    for backend in _order(r):
                        batch = list(itertools.islice(stream, searches))
                        gateways[backend].search_p50("bulk0", batch[:4], concurrency)  # warm the connections
                        p50s[backend].append(gateways[backend].search_p50("bulk0", batch, concurrency))
                        loads.append(os.getloadavg()[0])
                medians = {b: statistics.median(v) for b, v in p50s.items()}
                where = f"load {statistics.mean(loads):.2f}"
                rows.append((f"direct search p50 ms, concurrency {concurrency}", medians, where))
            rss = {b: g.rss_mib() for b, g in gateways.items()}
            rows.append(("gateway RSS at the end (MiB)", {b: v[0] for b, v in rss.items()}, load()))
            rows.append(("gateway peak RSS (MiB)", {b: v[1] for b, v in rss.items()}, load()))
        finally:
            for g in gateways.values():
                g.close()
    return rows


def table(title: str, rows: list[tuple[str, dict[str, float], str]]) -> str:
    header = f"| {'measure':44} | {'torch':>9} | {'onnx':>9} | onnx/torch | load (1 min) |"
    lines = [f"\n{title}", header, "|---|---:|---:|---:|---|"]
    for name, values, where in rows:
        ratio = values["onnx"] / values["torch"] if values["torch"] else float("nan")
        lines.append(f"| {name:44} | {values['torch']:9.1f} | {values['onnx']:9.1f} | {ratio:10.2f} | {where} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=6, help="alternating rounds of (a)")
    parser.add_argument("--repeats", type=int, default=15, help="calls per measure and round in (a) (median)")
    parser.add_argument("--docs", type=int, default=1000, help="SciFact documents per bulk ingest in (b)")
    parser.add_argument("--http-rounds", type=int, default=2, help="alternating rounds of (b)")
    parser.add_argument("--searches", type=int, default=96, help="searches per concurrency level, backend and round")
    parser.add_argument("--quick", action="store_true", help="a short trial: 2 rounds, 200 documents, 32 searches")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.repeats, args.docs, args.http_rounds, args.searches = 2, 5, 200, 1, 32
    ensure_onnx_model()
    print(f"embed bench: torch (sentence-transformers) vs onnx (ONNX Runtime), alternating; {load()}", flush=True)
    alone = embedder_alone(args.rounds, args.repeats)
    print(table(f"(a) the embedder alone, ms (median of {args.rounds} rounds)", alone), flush=True)
    gateways = through_gateways(args.docs, args.http_rounds, args.searches)
    print(table(f"(b) through a gateway per backend (median of {args.http_rounds} rounds)", gateways))
    print(f"\ndone; {load()}")


if __name__ == "__main__":
    main()
