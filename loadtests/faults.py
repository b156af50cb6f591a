"""Searches under failing dependencies: figures, not assertions (`make faults`; the test suite runs a short version).

A gateway process with Redis and a vLLM CPU worker (tiny generated model) serves think searches at a fixed
concurrency while this script stops and restarts Redis, then vLLM. For each phase it prints the share of 200s, the
share answered in degraded direct mode, p50/p99 latency, and after each restart the time until think mode (or the
Redis cache) is back, without restarting the gateway. Loopback only; every phase is bounded in time.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np

from tests.support.gateway import spawn_gateway
from tests.support.servers import RedisServer, VLLMServer, free_port
from tests.support.tinymodel import build_tiny_model

DOCS = [{"id": f"d{i}", "text": f"Passage {i} about tides, cells, markets and vaccines."} for i in range(200)]
_counter = itertools.count()


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"load {one:.2f}/{five:.2f}"


@dataclass
class Phase:
    name: str
    latencies: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    outcomes: Counter[str] = field(default_factory=Counter)  # think / direct / degraded / error
    cache: Counter[str] = field(default_factory=Counter)

    @property
    def total(self) -> int:
        return sum(self.statuses.values())

    def share(self, counter: Counter[str] | Counter[int], key: object) -> float:
        return counter[key] / self.total if self.total else 0.0

    def p(self, q: float) -> float:
        return float(np.percentile(np.asarray(self.latencies) * 1000, q)) if self.latencies else float("nan")

    def line(self) -> str:
        return (
            f"{self.name:<28} {self.total:>5} reqs  200s {self.share(self.statuses, 200):6.1%}  "
            f"degraded {self.share(self.outcomes, 'degraded'):6.1%}  think {self.share(self.outcomes, 'think'):6.1%}  "
            f"p50 {self.p(50):7.1f} ms  p99 {self.p(99):7.1f} ms  ({load()})"
        )


async def _one(client: httpx.AsyncClient, collection: str, phase: Phase, query: str) -> dict | None:
    t0 = time.perf_counter()
    try:
        r = await client.post(f"/v1/collections/{collection}/search", json={"query": query})
    except httpx.HTTPError:
        phase.statuses[0] += 1
        phase.outcomes["error"] += 1
        return None
    phase.latencies.append(time.perf_counter() - t0)
    phase.statuses[r.status_code] += 1
    if r.status_code != 200:
        phase.outcomes["error"] += 1
        return None
    body = r.json()
    phase.outcomes["degraded" if body["degraded"] else body["mode"]] += 1
    phase.cache[str(body["thought_cache"])] += 1
    return body


async def run_phase(
    base: str, collection: str, name: str, seconds: float, concurrency: int, repeat_every: int = 3
) -> Phase:
    """Searches at `concurrency` for `seconds` (bounded: at most 10,000 requests)."""
    phase = Phase(name)
    stop_at = time.monotonic() + seconds
    async with httpx.AsyncClient(base_url=base, timeout=60) as client:

        async def worker() -> None:
            while time.monotonic() < stop_at and phase.total < 10_000:
                n = next(_counter)
                # Every `repeat_every`-th query repeats an earlier one, so the thought cache has work to do.
                await _one(client, collection, phase, f"question {n % 7 if n % repeat_every == 0 else n} on tides")

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return phase


async def time_until(base: str, collection: str, good: Callable[[dict], bool], limit_s: float) -> float | None:
    """Seconds until a search answers as `good` says (polled, one repeated query), or None within `limit_s`."""
    t0 = time.monotonic()
    phase = Phase("probe")
    query = f"recovery probe {next(_counter)}"
    async with httpx.AsyncClient(base_url=base, timeout=60) as client:
        while time.monotonic() - t0 < limit_s:
            body = await _one(client, collection, phase, query)
            if body is not None and good(body):
                return time.monotonic() - t0
            await asyncio.sleep(0.1)
    return None


def start_gateway(port: int, redis_url: str, thinker_url: str, deadline_ms: int) -> subprocess.Popen[bytes]:
    env = {
        "REDIS_URL": redis_url,
        "THINKER_URL": thinker_url,
        "THINK_N": "2",
        "THINK_MAX_TOKENS": "16",
        "SEARCH_DEADLINE_MS": str(deadline_ms),
        "THINKER_TIMEOUT_S": "5",
        "BREAKER_RESET_S": "2",
        "LOG_LEVEL": "WARNING",
    }
    return spawn_gateway(port, env)


def scenario(
    base: str, redis: RedisServer, vllm: VLLMServer, seconds: float, concurrency: int, report: Callable[[str], None]
) -> dict[str, Phase]:
    """Baseline, Redis stopped, Redis back, vLLM stopped, vLLM back: phases by name, recovery times reported."""
    collection = "faults"
    with httpx.Client(base_url=base, timeout=60) as c:
        if c.get(f"/v1/collections/{collection}").status_code == 404:
            c.post("/v1/collections", json={"name": collection}).raise_for_status()
            c.post(f"/v1/collections/{collection}/documents", json={"documents": DOCS}).raise_for_status()
    phases: dict[str, Phase] = {}

    def run(name: str) -> Phase:
        phases[name] = asyncio.run(run_phase(base, collection, name, seconds, concurrency))
        report(phases[name].line())
        return phases[name]

    run("baseline")
    redis.stop()
    run("redis stopped")
    redis.start()
    back = asyncio.run(time_until(base, collection, lambda b: b["thought_cache"] == "hit", 60))
    report(f"{'  redis back -> cache hits':<28} after {back if back is None else round(back, 2)} s")
    run("redis restarted")
    vllm.stop()
    run("vllm stopped")
    t0 = time.monotonic()
    vllm.start()
    started = time.monotonic() - t0
    back = asyncio.run(time_until(base, collection, lambda b: b["mode"] == "think" and not b["degraded"], 60))
    report(
        f"{'  vllm back -> think mode':<28} after {back if back is None else round(back, 2)} s "
        f"(once vLLM was healthy, {started:.0f} s after its start)"
    )
    run("vllm restarted")
    return phases


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=15.0, help="length of each phase")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--deadline-ms", type=int, default=2000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        model = build_tiny_model(Path(tmp) / "tiny")
        with RedisServer() as redis, VLLMServer(model, "tiny-think") as vllm:
            port = free_port()
            gateway = start_gateway(port, redis.url, vllm.base_url, args.deadline_ms)
            try:
                print(
                    f"\nthink searches at concurrency {args.concurrency}, {args.seconds:.0f} s a phase, "
                    f"deadline {args.deadline_ms} ms"
                )
                scenario(f"http://127.0.0.1:{port}", redis, vllm, args.seconds, args.concurrency, print)
            finally:
                gateway.terminate()
                gateway.wait(30)


if __name__ == "__main__":
    main()
