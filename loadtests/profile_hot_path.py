"""Profile the gateway's hot path with py-spy (`pip install py-spy`): a repeated query whose vector is cached
(no embedding, no thinking: cache read + Qdrant search + HTTP), sent at a fixed concurrency while py-spy samples
the gateway process. Prints the functions with the largest share of samples; `--svg PATH` also records a flame graph.

    .venv/bin/python -m loadtests.profile_hot_path --seconds 15
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

import httpx

from loadtests.bench import corpus, load
from tests.support.servers import free_port, wait_http


async def drive(base: str, seconds: float, concurrency: int) -> int:
    sent = 0
    stop = time.monotonic() + seconds
    async with httpx.AsyncClient(base_url=base, timeout=60) as client:

        async def worker() -> None:
            nonlocal sent
            while time.monotonic() < stop:
                r = await client.post("/v1/collections/p/search", json={"query": "vitamin D and bone", "think": False})
                r.raise_for_status()
                sent += 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return sent


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
    args = parser.parse_args()
    py_spy = shutil.which("py-spy") or os.path.join(os.path.dirname(sys.executable), "py-spy")

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {**os.environ, "QDRANT_PATH": ":memory:", "LOG_LEVEL": "WARNING"}
    for unset in ("THINKER_URL", "REDIS_URL"):
        env.pop(unset, None)
    argv = [sys.executable, "-m", "service.cli", "serve", "--port", str(port)]
    gateway = subprocess.Popen(argv, env=env, process_group=0)
    try:
        wait_http(f"{base}/healthz", 180, proc=gateway)
        with httpx.Client(base_url=base, timeout=300) as client:
            client.post("/v1/collections", json={"name": "p"}).raise_for_status()
            docs = corpus(args.docs)
            for i in range(0, len(docs), 256):
                client.post("/v1/collections/p/documents", json={"documents": docs[i : i + 256]}).raise_for_status()
        asyncio.run(drive(base, 2, args.concurrency))  # warm up: the query's vector is cached from here on
        raw = os.path.join(tempfile.mkdtemp(prefix="thinksearch-profile-"), "stacks.txt")
        record = [py_spy, "record", "--pid", str(gateway.pid), "--duration", str(int(args.seconds)), "--nonblocking"]
        spy = subprocess.Popen([*record, "--format", "raw", "--output", raw], stdout=subprocess.DEVNULL)
        time.sleep(1)  # py-spy attaches
        sent = asyncio.run(drive(base, args.seconds, args.concurrency))
        spy.wait(60)
        print(f"{sent / args.seconds:.1f} req/s at concurrency {args.concurrency} while sampled ({load()})")
        print_top(raw, args.top)
        if args.svg:
            subprocess.run([*record, "--format", "flamegraph", "--output", args.svg], check=False)
    finally:
        gateway.terminate()
        gateway.wait(30)


if __name__ == "__main__":
    main()
