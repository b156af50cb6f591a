"""Profile the gateway's hot path with py-spy (`pip install py-spy`): a repeated query whose vector is cached
(no embedding, no thinking: cache read + Qdrant search + HTTP), sent at a fixed concurrency while py-spy samples
the gateway process. Prints the functions with the largest share of samples; `--svg PATH` also records a flame graph.

`--mode direct` (default): a direct-mode query (its text vector cached in process). `--mode think`: a think query
whose fused vector is cached (a vLLM CPU server with the tiny model is started to fill the cache once).

    .venv/bin/python -m loadtests.profile_hot_path --seconds 15 --mode think
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx

from loadtests.bench import THINK_ENV, VLLM_STARTUP_S, corpus, load
from tests.support.servers import VLLMServer, free_port, wait_http
from tests.support.tinymodel import build_tiny_model


async def drive(base: str, seconds: float, concurrency: int, think: bool) -> int:
    sent = 0
    stop = time.monotonic() + seconds
    body = {"query": "vitamin D and bone", "think": think, "deadline_ms": 300_000}
    async with httpx.AsyncClient(base_url=base, timeout=300) as client:

        async def worker() -> None:
            nonlocal sent
            while time.monotonic() < stop:
                r = await client.post("/v1/collections/p/search", json=body)
                r.raise_for_status()
                if sent > concurrency and think:
                    assert r.json()["thought_cache"] == "hit", r.text
                sent += 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return sent


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process: a cost per request that holds on a busy machine, unlike latency."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def print_top(raw: str, top: int) -> None:
    """Share of samples in which each function is on the stack (inclusive), from py-spy's collapsed stacks."""
    inclusive: Counter[str] = Counter()
    total = 0
    with open(raw, encoding="utf-8") as f:
        for line in f:
            stack, _, count = line.rstrip().rpartition(" ")
            n = int(count)
            total += n
            for frame in set(stack.split(";")):
                inclusive[frame] += n
    print(f"{total} samples; functions by share of samples on the stack:")
    for frame, n in inclusive.most_common(top):
        print(f"  {100 * n / total:5.1f}%  {frame[:150]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--docs", type=int, default=1000)
    parser.add_argument("--svg", default=None, help="also record a flame graph there")
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument("--mode", choices=("direct", "think"), default="direct")
    parser.add_argument("--no-profile", action="store_true", help="only the CPU time per request, no py-spy")
    args = parser.parse_args()
    if args.mode == "think":
        with tempfile.TemporaryDirectory() as tmp:
            model = build_tiny_model(Path(tmp) / "tiny")
            with VLLMServer(model, "tiny-think", startup_timeout=VLLM_STARTUP_S) as vllm:
                profile(args, {**THINK_ENV, "THINKER_URL": vllm.base_url})
    else:
        profile(args, {})


def profile(args: argparse.Namespace, extra_env: dict[str, str]) -> None:
    py_spy = shutil.which("py-spy") or os.path.join(os.path.dirname(sys.executable), "py-spy")
    think = "THINKER_URL" in extra_env
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {**os.environ, "QDRANT_PATH": ":memory:", "LOG_LEVEL": "WARNING"}
    for unset in ("THINKER_URL", "REDIS_URL"):
        env.pop(unset, None)
    env.update(extra_env)
    argv = [sys.executable, "-m", "service.cli", "serve", "--port", str(port)]
    gateway = subprocess.Popen(argv, env=env, process_group=0)
    try:
        wait_http(f"{base}/healthz", 180, proc=gateway)
        with httpx.Client(base_url=base, timeout=300) as client:
            client.post("/v1/collections", json={"name": "p"}).raise_for_status()
            docs = corpus(args.docs)
            for i in range(0, len(docs), 256):
                client.post("/v1/collections/p/documents", json={"documents": docs[i : i + 256]}).raise_for_status()
        asyncio.run(drive(base, 2, 1, think))  # warm up: the query's vector is cached from here on
        # Unsampled first: the gateway's CPU time per request (py-spy's sampling would add to it).
        cpu0 = cpu_seconds(gateway.pid)
        sent = asyncio.run(drive(base, args.seconds, args.concurrency, think))
        cpu_ms = (cpu_seconds(gateway.pid) - cpu0) * 1000 / sent
        print(f"gateway CPU per request: {cpu_ms:.2f} ms ({sent} requests, concurrency {args.concurrency}, {load()})")
        if args.no_profile:
            return
        raw = os.path.join(tempfile.mkdtemp(prefix="thinksearch-profile-"), "stacks.txt")
        record = [py_spy, "record", "--pid", str(gateway.pid), "--duration", str(int(args.seconds)), "--nonblocking"]
        spy = subprocess.Popen([*record, "--format", "raw", "--output", raw], stdout=subprocess.DEVNULL)
        time.sleep(1)  # py-spy attaches
        sent = asyncio.run(drive(base, args.seconds, args.concurrency, think))
        spy.wait(60)
        mode = "cached think" if think else "direct (cached text vector)"
        print(f"{mode}: {sent / args.seconds:.1f} req/s at concurrency {args.concurrency} while sampled ({load()})")
        print_top(raw, args.top)
        if args.svg:
            subprocess.run([*record, "--format", "flamegraph", "--output", args.svg], check=False)
    finally:
        gateway.terminate()
        gateway.wait(30)


if __name__ == "__main__":
    main()
