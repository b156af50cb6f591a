"""`make bench`: figures, not assertions. Prints, with the load average beside every figure:

(a) sweep: p50/p95/p99 and requests/s of POST /search for cached think, direct (a new query each time) and cold
    think (a new query each time) at concurrency 1, 4, 16, 64, beside the bare in-process components at the same
    concurrency (cached think: cache read + Qdrant search; direct: embed + Qdrant search; both the gateway's
    default hybrid search, BM25 query included), with the ratios;
(b) vLLM requests per cold query;
(c) batch vs single: 64 new direct queries in one POST /search/batch vs 64 single searches at concurrency 1;
(d) streaming: time to the first SSE event (direct results) vs the full think answer, cold queries;
(e) the gateway's RSS.

Real components: vLLM (CPU build, tiny generated model), the gateway as its own uvicorn process (in-process thought
cache), MiniLM in-process, the default embedded store (Qdrant Edge, in a temporary folder; the bare side has its own
Edge store with the same documents). `--quick` keeps a run under two minutes. `--versus` runs its gateways on
qdrant-client's in-memory mode.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import numpy as np

from service.clients.sparse import bm25
from service.model.documents import StoredDocument
from service.model.profiles import make_profile
from service.redis.cache import CachedQuery, MemoryThoughtCache
from service.settings import Settings
from service.store.base import SearchQuery
from service.store.factory import open_store
from service.tools.evaluation import read_jsonl
from service.wiring import open_embedder
from tests.support.servers import REPO_ROOT, VLLMServer, free_port, rss_bytes, wait_http
from tests.support.tinymodel import build_tiny_model

SCIFACT = REPO_ROOT.parent / "shared" / "data" / "beir" / "scifact"
THINK_ENV = {"THINK_PROFILE": "hyde", "THINK_N": "8", "THINK_MAX_TOKENS": "64"}
CONCURRENCY = (1, 4, 16, 64)
COLLECTION = "bench"
# A shared 2-core machine under load can take minutes to start vLLM: a benchmark waits rather than fails.
VLLM_STARTUP_S = 900
_fresh = itertools.count()


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load {one:.2f} {five:.2f} {fifteen:.2f}"


def pct(samples: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(samples) * 1000, q))


def fresh_query() -> str:
    """A query never seen before (no cache entry anywhere)."""
    return f"effect of treatment {next(_fresh)} {uuid.uuid4().hex[:8]} on cell growth in adults"


def corpus(n: int) -> list[dict]:
    # Titles only: short texts keep the two ingests (gateway and baseline) quick; search cost is what we measure.
    docs = []
    for d in read_jsonl(SCIFACT / "corpus.jsonl"):
        docs.append({"id": d["_id"], "text": d["title"] or d["text"][:200]})
        if len(docs) == n:
            break
    return docs


def start_gateway(port: int, thinker_url: str, extra: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    env = {**os.environ, **THINK_ENV, "QDRANT_PATH": ":memory:", "THINKER_URL": thinker_url, "LOG_LEVEL": "WARNING"}
    env.update(extra or {})
    env.pop("REDIS_URL", None)
    # Same session as this process (no setsid): the kernel's autogroups would otherwise skew the comparison.
    proc = subprocess.Popen(
        [sys.executable, "-m", "service.cli", "serve", "--port", str(port)], env=env, process_group=0
    )
    wait_http(f"http://127.0.0.1:{port}/healthz", 180, proc=proc)
    return proc


async def at_concurrency(
    concurrency: int, total: int, call: Callable[[], Awaitable[None]]
) -> tuple[list[float], float]:
    """`total` calls, `concurrency` at a time: per-call latencies and the wall time."""
    latencies: list[float] = []
    gate = asyncio.Semaphore(concurrency)

    async def one() -> None:
        async with gate:
            t0 = time.perf_counter()
            await call()
            latencies.append(time.perf_counter() - t0)

    t0 = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(total)))
    return latencies, time.perf_counter() - t0


def row(label: str, latencies: list[float], wall: float, extra: str = "") -> str:
    rps = len(latencies) / wall
    return (
        f"    {label:34} {pct(latencies, 50):9.2f} {pct(latencies, 95):9.2f} {pct(latencies, 99):9.2f} "
        f"{rps:9.1f}  {extra}{load()}"
    )


class Bench:
    def __init__(
        self,
        base: str,
        vllm: VLLMServer,
        docs: list[dict],
        requests: int,
        concurrency: tuple[int, ...] = CONCURRENCY,
        bare_store: str | None = None,
    ) -> None:
        self.bare_store = bare_store  # an Edge store's folder; None: qdrant-client's in-memory mode
        self.concurrency = concurrency
        self.cold = True
        self.base = base
        self.vllm = vllm
        self.docs = docs
        self.requests = requests
        self.settings = Settings(_env_file=None, qdrant_path=":memory:", **{k.lower(): v for k, v in THINK_ENV.items()})
        self.profile = make_profile(self.settings)
        self.client = httpx.AsyncClient(base_url=base, timeout=300, limits=httpx.Limits(max_connections=128))

    async def search(self, body: dict) -> dict:
        r = await self.client.post(f"/v1/collections/{COLLECTION}/search", json=body)
        r.raise_for_status()
        return r.json()

    async def setup(self) -> None:
        assert (await self.client.post("/v1/collections", json={"name": COLLECTION})).status_code == 201
        for i in range(0, len(self.docs), 256):
            batch = {"documents": self.docs[i : i + 256]}
            (await self.client.post(f"/v1/collections/{COLLECTION}/documents", json=batch)).raise_for_status()
        # The bare components, in this process: MiniLM (EMBEDDER_BACKEND's), an in-process cache, embedded Qdrant
        # with the same docs.
        self.embedder = await open_embedder(self.settings.model_copy(update={"embedder_url": None}))
        self.store = open_store(url=None, api_key=None, path=self.bare_store or ":memory:", timeout_s=10)
        dim = await self.embedder.dimension()
        await self.store.create(COLLECTION, dim, embedder=self.embedder.name, profile=self.profile.name)
        stored = [StoredDocument(d["id"], d["text"], "", {}) for d in self.docs]
        await self.store.upsert(COLLECTION, stored, await self.embedder.embed([d.text for d in stored], documents=True))
        self.cache = MemoryThoughtCache(100, 3600)

    async def sweep(self) -> None:
        query = "What is the effect of vitamin D on bone density in older adults?"
        warm = await self.search({"query": query, "include_thoughts": True})
        assert warm["mode"] == "think", warm
        vector = self.profile.fuse(await self.embedder.embed(self.profile.query_texts(query, warm["thoughts"])))
        await self.cache.set_query("bench-key", CachedQuery(warm["thoughts"], vector))

        inside: list[float] = []  # the gateway's own pipeline time (timings_ms.total): HTTP minus transport

        async def http_cached() -> None:
            body = await self.search({"query": query})
            assert body["thought_cache"] == "hit"
            inside.append(body["timings_ms"]["total"] / 1000)

        async def bare_search(text: str, vector: np.ndarray, thoughts: list[str] | None) -> None:
            # The search the gateway makes by default: hybrid, its BM25 side from the query and the thoughts.
            sparse = bm25().query(self.profile.sparse_texts(text, thoughts))
            await self.store.search_batch(COLLECTION, [SearchQuery(vector, 10, retrieval="hybrid", sparse=sparse)])

        async def bare_cached() -> None:
            entry = await self.cache.get_query("bench-key")
            assert entry is not None
            await bare_search(query, entry.vector, entry.thoughts)

        async def http_direct() -> None:
            assert (await self.search({"query": fresh_query(), "think": False}))["mode"] == "direct"

        async def bare_direct() -> None:
            text = fresh_query()
            await bare_search(text, self.profile.fuse(await self.embedder.embed([text])), None)

        async def http_cold() -> None:
            # A long deadline: this measures thinking, not degrading.
            body = await self.search({"query": fresh_query(), "deadline_ms": 300_000})
            assert body["mode"] == "think" and body["thought_cache"] == "miss", body

        for _ in range(5):  # warm both paths up
            await http_cached()
            await bare_cached()
            await http_direct()
            await bare_direct()
        n, tokens = THINK_ENV["THINK_N"], THINK_ENV["THINK_MAX_TOKENS"]
        print(
            f"\n(a) sweep: {len(self.docs)} docs, n={n}, {tokens} new tokens, "
            "hybrid retrieval (the default) on both sides"
        )
        print(f"    {'':34} {'p50 ms':>9} {'p95 ms':>9} {'p99 ms':>9} {'req/s':>9}")
        for c in self.concurrency:
            n = max(self.requests, 2 * c)
            results = {}
            inside.clear()
            for label, call in (
                ("cached think HTTP", http_cached),
                ("cached think bare", bare_cached),
                ("direct HTTP", http_direct),
                ("direct bare", bare_direct),
            ):
                results[label] = await at_concurrency(c, n, call)
                print(row(f"c={c:<3} {label}", *results[label]))
                if label == "cached think HTTP":
                    p50, p95 = pct(inside, 50), pct(inside, 95)
                    print(f"    c={c:<3} {'cached think, in-gateway time':27} {p50:9.2f} {p95:9.2f}   ({load()})")
            for kind in ("cached think", "direct"):
                (http, http_wall), (bare, bare_wall) = results[f"{kind} HTTP"], results[f"{kind} bare"]
                # Bare calls into embedded Qdrant do not overlap (it runs on the loop): compare throughput too.
                rps = (len(http) / http_wall) / (len(bare) / bare_wall)
                ratio = f"{kind} ratio HTTP/bare: p50 {pct(http, 50) / pct(bare, 50):.2f}, req/s {rps:.2f}"
                print(f"    c={c:<3} {ratio}   ({load()})")
            cached_p50, direct_p50 = pct(results["cached think HTTP"][0], 50), pct(results["direct HTTP"][0], 50)
            print(f"    c={c:<3} cached think p50 / direct p50 {cached_p50 / direct_p50:.2f}   ({load()})")
        # Cold think last: its generations must not run under the figures above.
        if not self.cold:
            return
        cold_per_query: list[str] = []
        for c in self.concurrency:
            cold_n = max(c, 8)
            before = self.vllm.completion_requests()
            lat, wall = await at_concurrency(c, cold_n, http_cold)
            print(row(f"c={c:<3} cold think HTTP", lat, wall))
            await asyncio.sleep(0.5)  # vLLM counts a request just after its last byte
            made = self.vllm.completion_requests() - before
            cold_per_query.append(f"c={c}: {made}/{cold_n} = {made / cold_n:.2f}")
        print(f"\n(b) vLLM requests per cold query: {'; '.join(cold_per_query)}   ({load()})")

    async def batch_vs_single(self, size: int = 64) -> None:
        singles = [fresh_query() for _ in range(size)]
        t0 = time.perf_counter()
        for q in singles:
            await self.search({"query": q, "think": False})
        single_s = time.perf_counter() - t0
        batch = {"searches": [{"query": fresh_query(), "think": False} for _ in range(size)]}
        t0 = time.perf_counter()
        r = await self.client.post(f"/v1/collections/{COLLECTION}/search/batch", json=batch)
        batch_s = time.perf_counter() - t0
        r.raise_for_status()
        print(
            f"\n(c) {size} new direct queries: singles at concurrency 1 {size / single_s:.1f} q/s, one batch "
            f"{size / batch_s:.1f} q/s, ratio {single_s / batch_s:.2f}x   ({load()})"
        )

    async def streaming(self, rounds: int) -> None:
        first, full = [], []
        for _ in range(rounds):
            body = {"query": fresh_query(), "stream": True, "deadline_ms": 300_000}
            t0 = time.perf_counter()
            events = []
            async with self.client.stream("POST", f"/v1/collections/{COLLECTION}/search", json=body) as r:
                async for line in r.aiter_lines():
                    if line.startswith("event: "):
                        events.append((line[len("event: ") :], time.perf_counter() - t0))
            assert [name for name, _ in events] == ["direct", "think", "done"], events
            first.append(events[0][1])
            full.append(events[1][1])
        print(
            f"\n(d) streaming, {rounds} cold queries: first event (direct) p50 {pct(first, 50):.1f} ms, "
            f"full think answer p50 {pct(full, 50):.1f} ms   ({load()})"
        )

    async def aclose(self) -> None:
        await self.client.aclose()
        await self.embedder.aclose()
        await self.store.aclose()


async def versus(bases: dict[str, str], vllm: VLLMServer, args: argparse.Namespace) -> None:
    """Cold think searches (distinct new queries) on two gateways that differ in one setting, alternating."""
    clients = {label: httpx.AsyncClient(base_url=b, timeout=300) for label, b in bases.items()}
    docs = corpus(args.docs)
    try:
        for client in clients.values():
            assert (await client.post("/v1/collections", json={"name": COLLECTION})).status_code == 201
            for i in range(0, len(docs), 256):
                batch = {"documents": docs[i : i + 256]}
                (await client.post(f"/v1/collections/{COLLECTION}/documents", json=batch)).raise_for_status()

        def cold(client: httpx.AsyncClient) -> Callable[[], Awaitable[None]]:
            async def call() -> None:
                r = await client.post(
                    f"/v1/collections/{COLLECTION}/search", json={"query": fresh_query(), "deadline_ms": 300_000}
                )
                r.raise_for_status()
                assert r.json()["thought_cache"] == "miss", r.text

            return call

        for client in clients.values():  # warm both up (model load, first generation)
            await at_concurrency(2, 4, cold(client))
        n, tokens = THINK_ENV["THINK_N"], THINK_ENV["THINK_MAX_TOKENS"]
        print(f"\n(versus) cold think, {len(docs)} docs, n={n}, {tokens} new tokens, {args.rounds} rounds alternating")
        print(f"    {'':34} {'p50 ms':>9} {'p95 ms':>9} {'p99 ms':>9} {'req/s':>9}")
        for c in args.cold_concurrency:
            merged: dict[str, tuple[list[float], float]] = {label: ([], 0.0) for label in clients}
            for round_ in range(args.rounds):
                for label, client in clients.items():
                    lat, wall = await at_concurrency(c, max(args.requests, 2 * c), cold(client))
                    print(row(f"c={c:<3} {label} r{round_ + 1}", lat, wall))
                    merged[label] = (merged[label][0] + lat, merged[label][1] + wall)
            (a_lat, a_wall), (b_lat, b_wall) = merged.values()
            a, b = merged
            ratio = f"c={c:<3} {b} / {a}: p50 {pct(b_lat, 50) / pct(a_lat, 50):.2f}, req/s "
            print(f"    {ratio}{(len(b_lat) / b_wall) / (len(a_lat) / a_wall):.2f}   ({load()})")
    finally:
        for client in clients.values():
            await client.aclose()


async def run(base: str, vllm: VLLMServer, args: argparse.Namespace, bare_store: str) -> None:
    bench = Bench(base, vllm, corpus(args.docs), args.requests, tuple(args.concurrency), bare_store)
    bench.cold = not args.hot
    try:
        await bench.setup()
        await bench.sweep()
        if args.hot:
            return
        await bench.batch_vs_single()
        await bench.streaming(args.stream_rounds)
    finally:
        await bench.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=2000)
    parser.add_argument("--requests", type=int, default=60, help="searches per scenario and concurrency (min 2c)")
    parser.add_argument("--stream-rounds", type=int, default=10)
    parser.add_argument("--quick", action="store_true", help="fewer docs and requests: under two minutes")
    parser.add_argument(
        "--versus",
        default=None,
        metavar="ENV=VALUE[,ENV=VALUE]",
        help="only cold think: a second gateway with these settings beside the default one, alternating",
    )
    parser.add_argument("--cold-concurrency", default="1,8", help="with --versus: concurrencies, comma separated")
    parser.add_argument("--rounds", type=int, default=2, help="with --versus: alternations")
    parser.add_argument("--hot", action="store_true", help="only the cached think and direct sweep (a)")
    parser.add_argument("--concurrency", default=",".join(map(str, CONCURRENCY)), help="sweep concurrencies")
    parser.add_argument(
        "--thinker",
        choices=("tiny", "real"),
        default="tiny",
        help="the thought worker: the random tiny model (default), or SmolLM2 prepared by `make real-thinker`",
    )
    args = parser.parse_args()
    args.concurrency = [int(c) for c in args.concurrency.split(",")]
    if args.quick:
        args.docs, args.requests, args.stream_rounds = 500, 20, 4
    args.cold_concurrency = [int(c) for c in args.cold_concurrency.split(",")]
    if args.versus:
        compare_settings(args)
        return

    with tempfile.TemporaryDirectory() as tmp, _thinker(args.thinker, Path(tmp)) as vllm:
        port = free_port()
        # The production default, Qdrant Edge, on both sides (the bare side's own folder).
        gateway = start_gateway(port, vllm.base_url, {"QDRANT_PATH": str(Path(tmp) / "gateway-store")})
        try:
            asyncio.run(run(f"http://127.0.0.1:{port}", vllm, args, str(Path(tmp) / "bare-store")))
            rss_mb = rss_bytes([gateway.pid]) / 2**20
            print(f"\n(e) gateway RSS (local MiniLM embedder, {args.docs} docs): {rss_mb:.0f} MB   ({load()})")
        finally:
            gateway.terminate()
            gateway.wait(30)


def _thinker(kind: str, tmp: Path) -> VLLMServer:
    """The thought worker of a run: the tiny random model (protocol and speed), or the real small LLM."""
    if kind == "real":
        from tests.support.realmodel import PREPARE_HINT, is_prepared, real_vllm_server

        if not is_prepared():
            raise SystemExit(f"--thinker real: the checkpoint is not prepared; {PREPARE_HINT}")
        return real_vllm_server()
    return VLLMServer(build_tiny_model(tmp / "tiny"), "tiny-think", startup_timeout=VLLM_STARTUP_S)


def compare_settings(args: argparse.Namespace) -> None:
    extra = dict(kv.split("=", 1) for kv in args.versus.split(","))
    with tempfile.TemporaryDirectory() as tmp, _thinker(args.thinker, Path(tmp)) as vllm:
        gateways = {}
        try:
            for label, env in (("default", {}), (args.versus, extra)):
                port = free_port()
                gateways[label] = (f"http://127.0.0.1:{port}", start_gateway(port, vllm.base_url, env))
            asyncio.run(versus({label: base for label, (base, _) in gateways.items()}, vllm, args))
        finally:
            for _, proc in gateways.values():
                proc.terminate()
                proc.wait(30)


if __name__ == "__main__":
    main()
