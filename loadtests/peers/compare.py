"""`make compare`: the issue's peer table, reproduced in one command (figures printed, not asserted).

One vLLM CPU server (tiny generated model), the same MiniLM, the same SciFact documents, 64 new tokens; three
HTTP services started here: the LangChain HyDE peer (its own venv, loadtests/peers/.venv), ThinkSearch at the
peer's n (1) and ThinkSearch at its default n=8. Each workload runs on the three in turn, alternating, `--rounds`
times, with the load average beside every figure:

- one query repeated 50x: p50 and LLM calls;
- a burst of 32 identical cold queries: wall time and LLM calls;
- 50 distinct cold queries at concurrency 1: p50;
- distinct cold queries at concurrency 8: throughput.

Both sides keep their collections in qdrant-client's in-memory local mode, and ThinkSearch searches with the
peer's retrieval, dense (`--retrieval hybrid` to time its default instead: local mode runs the BM25 side and the
fusion in Python, so there it costs far more than on the Edge store or a Qdrant server; loadtests/hybrid_bench.py
measures hybrid against dense on the default store).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np

from loadtests.bench import SCIFACT, VLLM_STARTUP_S, load
from service.tools.evaluation import read_jsonl
from tests.support.servers import REPO_ROOT, VLLMServer, free_port, wait_http
from tests.support.tinymodel import build_tiny_model

PEER_PYTHON = REPO_ROOT / "loadtests" / "peers" / ".venv" / "bin" / "python"
MAX_TOKENS = "64"


@dataclass
class System:
    name: str
    url: str
    search_path: str
    proc: subprocess.Popen[bytes]
    extra: dict | None = None  # fields ThinkSearch's searches carry

    def body(self, query: str) -> dict:
        return {"query": query, **self.extra} if self.extra is not None else {"query": query}


def documents(n: int) -> list[dict]:
    docs = []
    for d in read_jsonl(SCIFACT / "corpus.jsonl"):
        docs.append({"id": d["_id"], "text": f"{d['title']} {d['text']}".strip()})
        if len(docs) == n:
            break
    return docs


def start(argv: list[str], env: dict[str, str], health: str) -> subprocess.Popen[bytes]:
    # Same session as this process (no setsid): the kernel's autogroups would otherwise skew the comparison.
    proc = subprocess.Popen(argv, env={**os.environ, **env}, process_group=0, cwd=REPO_ROOT)
    wait_http(health, 900, proc=proc)
    return proc


def start_peer(vllm: VLLMServer, docs_file: Path) -> System:
    port = free_port()
    env = {
        "PEER_THINKER_URL": vllm.base_url,
        "PEER_MODEL": "tiny-think",
        "PEER_MAX_TOKENS": MAX_TOKENS,
        "PEER_DOCS": str(docs_file),
    }
    app = "loadtests.peers.hyde_peer:app"
    argv = [str(PEER_PYTHON), "-m", "uvicorn", app, "--port", str(port), "--log-level", "warning"]
    proc = start(argv, env, f"http://127.0.0.1:{port}/healthz")
    return System("LangChain HyDE peer (n=1)", f"http://127.0.0.1:{port}", "/search", proc)


def start_thinksearch(vllm: VLLMServer, docs: list[dict], n: int, retrieval: str) -> System:
    port = free_port()
    env = {
        "THINK_PROFILE": "hyde",
        "THINK_N": str(n),
        "THINK_MAX_TOKENS": MAX_TOKENS,
        "THINKER_URL": vllm.base_url,
        "QDRANT_PATH": ":memory:",
        "LOG_LEVEL": "WARNING",
    }
    env_clear = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "service.cli", "serve", "--port", str(port)],
        env={**env_clear, **env},
        process_group=0,
    )
    url = f"http://127.0.0.1:{port}"
    wait_http(f"{url}/healthz", 300, proc=proc)
    with httpx.Client(base_url=url, timeout=600) as client:
        collection = {"name": "scifact", "sparse": retrieval != "dense"}
        client.post("/v1/collections", json=collection).raise_for_status()
        for i in range(0, len(docs), 256):
            client.post("/v1/collections/scifact/documents", json={"documents": docs[i : i + 256]}).raise_for_status()
    extra = {"deadline_ms": 600_000, "retrieval": retrieval}
    return System(f"ThinkSearch (n={n})", url, "/v1/collections/scifact/search", proc, extra)


def fresh(tag: str, i: int) -> str:
    return f"what is known about {tag} {i} {uuid.uuid4().hex[:6]} and cell growth"


async def timed(client: httpx.AsyncClient, system: System, query: str) -> float:
    t0 = time.perf_counter()
    r = await client.post(system.search_path, json=system.body(query))
    r.raise_for_status()
    return time.perf_counter() - t0


async def repeat(c: httpx.AsyncClient, system: System, vllm: VLLMServer, args: argparse.Namespace, tag: str) -> str:
    before = vllm.completion_requests()
    lat = [await timed(c, system, f"repeated question {tag}") for _ in range(args.repeats)]
    await asyncio.sleep(0.3)  # vLLM counts a request just after its last byte
    return f"{np.percentile(lat, 50) * 1000:7.1f} ms, {vllm.completion_requests() - before} LLM calls"


async def burst(c: httpx.AsyncClient, system: System, vllm: VLLMServer, args: argparse.Namespace, tag: str) -> str:
    before = vllm.completion_requests()
    t0 = time.perf_counter()
    await asyncio.gather(*(timed(c, system, f"burst question {tag}") for _ in range(32)))
    wall = time.perf_counter() - t0
    await asyncio.sleep(0.3)
    return f"{wall:6.2f} s, {vllm.completion_requests() - before} LLM calls"


async def distinct(c: httpx.AsyncClient, system: System, vllm: VLLMServer, args: argparse.Namespace, tag: str) -> str:
    lat = [await timed(c, system, fresh(tag, i)) for i in range(args.distinct)]
    return f"{np.percentile(lat, 50) * 1000:7.1f} ms"


async def c8(c: httpx.AsyncClient, system: System, vllm: VLLMServer, args: argparse.Namespace, tag: str) -> str:
    gate = asyncio.Semaphore(8)

    async def one(i: int) -> None:
        async with gate:
            await timed(c, system, fresh(tag, i))

    t0 = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(args.throughput)))
    return f"{args.throughput / (time.perf_counter() - t0):6.2f} req/s"


WORKLOADS = (
    ("one query repeated, p50", repeat),
    ("burst of 32 identical cold queries, wall", burst),
    ("distinct cold queries at concurrency 1, p50", distinct),
    ("distinct cold queries at concurrency 8, throughput", c8),
)


async def run(systems: list[System], vllm: VLLMServer, args: argparse.Namespace) -> None:
    clients = {
        s.name: httpx.AsyncClient(base_url=s.url, timeout=900, limits=httpx.Limits(max_connections=64)) for s in systems
    }
    try:
        for label, workload in WORKLOADS:
            print(f"\n  {label}")
            for round_ in range(args.rounds):  # the systems alternate, workload by workload
                for s in systems:
                    figure = await workload(clients[s.name], s, vllm, args, uuid.uuid4().hex[:6])
                    print(f"    {s.name:28} {figure}   (round {round_ + 1}, {load()})")
    finally:
        for client in clients.values():
            await client.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=2, help="alternations of the three systems")
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--distinct", type=int, default=50)
    parser.add_argument("--throughput", type=int, default=48, help="distinct queries sent at concurrency 8")
    parser.add_argument(
        "--retrieval", choices=["dense", "hybrid"], default="dense", help="ThinkSearch's (the peer's is dense)"
    )
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.docs, args.rounds, args.repeats, args.distinct, args.throughput = 300, 1, 20, 10, 16
    if not PEER_PYTHON.exists():
        sys.exit("the peer's venv is missing: make peer-env")

    docs = documents(args.docs)
    with tempfile.TemporaryDirectory() as tmp:
        docs_file = Path(tmp) / "docs.jsonl"
        docs_file.write_text("".join(json.dumps(d) + "\n" for d in docs))
        model = build_tiny_model(Path(tmp) / "tiny")
        with VLLMServer(model, "tiny-think", startup_timeout=VLLM_STARTUP_S) as vllm:
            systems: list[System] = []
            try:
                systems.append(start_peer(vllm, docs_file))
                systems.append(start_thinksearch(vllm, docs, 1, args.retrieval))
                systems.append(start_thinksearch(vllm, docs, 8, args.retrieval))
                print(
                    f"\n{len(docs)} SciFact documents, {MAX_TOKENS} new tokens, one vLLM CPU server, ThinkSearch "
                    f"retrieval {args.retrieval} ({load()})"
                )
                asyncio.run(run(systems, vllm, args))
            finally:
                for s in systems:
                    s.proc.terminate()
                    s.proc.wait(60)


if __name__ == "__main__":
    main()
