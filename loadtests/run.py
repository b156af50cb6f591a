"""`make loadtest SCENARIO=hot|cold|burst|batch|mixed`: one locust scenario, headless, with a report.

Brings up the local stack (Redis, a vLLM CPU worker with a tiny generated model, ThinkSearch as its own process,
SciFact documents loaded) or, with --url, uses a running deployment. Runs locust (bounded in users and time, loopback
only for the local stack) and writes loadtests/results/<timestamp>-<scenario>/: report.md, locust's CSVs, and plots
of p50/p95/p99 latency and RPS against users over time. With --peer, the same traffic also goes to the LangChain
HyDE peer (same vLLM, embedder and documents) and the report gives ThinkSearch / peer ratios.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tests.support.gateway import spawn_gateway
from tests.support.servers import REPO_ROOT, RedisServer, VLLMServer, free_port
from tests.support.tinymodel import build_tiny_model

RESULTS = REPO_ROOT / "loadtests" / "results"
LOCUSTFILE = REPO_ROOT / "loadtests" / "locustfile.py"
SCIFACT = REPO_ROOT.parent / "shared" / "data" / "beir" / "scifact"
SCENARIOS = ("hot", "cold", "burst", "batch", "mixed")


def load() -> tuple[float, float, float]:
    return os.getloadavg()


@dataclass
class Run:
    """One locust run's aggregate figures."""

    target: str
    requests: int
    failures: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    rps: float
    worker_requests: int | None
    load_before: tuple[float, float, float]
    load_after: tuple[float, float, float]
    history: list[dict[str, str]] = field(default_factory=list, repr=False)

    @property
    def worker_requests_per_query(self) -> float | None:
        if self.worker_requests is None or not self.requests:
            return None
        return self.worker_requests / self.requests


@dataclass
class Stack:
    url: str
    collection: str
    vllm: VLLMServer | None = None
    api_key: str | None = None

    def worker_requests(self) -> int | None:
        return self.vllm.completion_requests() if self.vllm is not None else None


def scifact_documents(limit: int) -> list[dict]:
    docs = []
    with (SCIFACT / "corpus.jsonl").open() as f:
        for line in f:
            d = json.loads(line)
            docs.append({"id": d["_id"], "title": d.get("title", ""), "text": d["text"]})
            if len(docs) == limit:
                break
    return docs


def load_documents(url: str, collection: str, docs: list[dict], api_key: str | None) -> None:
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    with httpx.Client(base_url=url, timeout=600, headers=headers) as c:
        if c.get(f"/v1/collections/{collection}").status_code == 200:
            return
        c.post("/v1/collections", json={"name": collection}).raise_for_status()
        for i in range(0, len(docs), 256):
            c.post(f"/v1/collections/{collection}/documents", json={"documents": docs[i : i + 256]}).raise_for_status()


@contextlib.contextmanager
def local_stack(args: argparse.Namespace) -> Iterator[Stack]:
    with tempfile.TemporaryDirectory() as tmp:
        model = build_tiny_model(Path(tmp) / "tiny")
        with RedisServer() as redis, VLLMServer(model, "tiny-think") as vllm:
            port = free_port()
            env = {
                "REDIS_URL": redis.url,
                "THINKER_URL": vllm.base_url,
                "THINK_N": str(args.think_n),
                "THINK_MAX_TOKENS": str(args.max_tokens),
                "LOG_LEVEL": "WARNING",
            }
            gateway = spawn_gateway(port, env)
            try:
                url = f"http://127.0.0.1:{port}"
                load_documents(url, args.collection, scifact_documents(args.docs), None)
                yield Stack(url=url, collection=args.collection, vllm=vllm)
            finally:
                gateway.terminate()
                gateway.wait(30)


def run_locust(stack: Stack, target: str, host: str, args: argparse.Namespace, out: Path) -> Run:
    prefix = out / target
    env = {
        **os.environ,
        "SCENARIO": args.scenario,
        "TARGET": target,
        "COLLECTION": stack.collection,
        "BURST_WINDOW_S": str(args.burst_window),
    }
    if stack.api_key:
        env["API_KEY"] = stack.api_key
    command = [
        sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "--host", host,
        "--csv", str(prefix), "--csv-full-history", "--only-summary",
    ]  # fmt: skip
    if args.ramp:
        env.update(SHAPE="ramp", RAMP_USERS=args.ramp, STAGE_S=str(args.stage))
    else:
        command += ["-u", str(args.users), "-r", str(args.users), "-t", f"{args.duration}s"]
    before_requests, before_load = stack.worker_requests(), load()
    bound = args.duration if not args.ramp else args.stage * len(args.ramp.split(","))
    subprocess.run(command, env=env, check=False, timeout=bound + 120, cwd=REPO_ROOT)
    time.sleep(0.5)  # vLLM counts a request just after its last byte
    after_requests = stack.worker_requests()
    with open(f"{prefix}_stats.csv") as f:
        total = next(r for r in csv.DictReader(f) if r["Name"] == "Aggregated")
    with open(f"{prefix}_stats_history.csv") as f:
        history = [r for r in csv.DictReader(f) if r["Name"] == "Aggregated"]
    return Run(
        target=target,
        requests=int(total["Request Count"]),
        failures=int(total["Failure Count"]),
        p50_ms=float(total["50%"]),
        p95_ms=float(total["95%"]),
        p99_ms=float(total["99%"]),
        rps=float(total["Requests/s"]),
        worker_requests=None if before_requests is None else after_requests - before_requests,
        load_before=before_load,
        load_after=load(),
        history=history,
    )


def plot(run: Run, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in run.history if r["50%"] not in ("N/A", "")]
    if not rows:
        return
    t0 = int(rows[0]["Timestamp"])
    t = [int(r["Timestamp"]) - t0 for r in rows]
    fig, (latency, rate) = plt.subplots(2, 1, figsize=(9, 6.5), sharex=True)
    for q in ("50%", "95%", "99%"):
        latency.plot(t, [float(r[q]) for r in rows], label=f"p{q[:-1]}")
    latency.set_ylabel("latency (ms)")
    latency.set_yscale("log")
    latency.legend()
    latency.set_title(f"{run.target}: latency and throughput over time")
    rate.plot(t, [float(r["Requests/s"]) for r in rows], color="tab:green", label="requests/s")
    rate.set_ylabel("requests/s")
    rate.set_xlabel("seconds")
    users = rate.twinx()
    users.plot(t, [int(r["User Count"]) for r in rows], color="tab:gray", linestyle="--", label="users")
    users.set_ylabel("users")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def report(args: argparse.Namespace, runs: list[Run], out: Path) -> str:
    steady = f"{args.users} users, {args.duration} s"
    shape = f"ramp {args.ramp} users, {args.stage:.0f} s a step" if args.ramp else steady
    lines = [
        f"# Load test: `{args.scenario}`",
        "",
        f"- command: `{' '.join(sys.argv)}`",
        f"- when: {dt.datetime.now(dt.UTC).isoformat(timespec='seconds')}; machine: {platform.machine()}, "
        f"{os.cpu_count()} cores; target: {args.url or 'local stack (Redis, vLLM CPU tiny model, ThinkSearch)'}",
        f"- load: {shape}",
        "",
        "| target | requests | failures | p50 ms | p95 ms | p99 ms | RPS | worker requests / query "
        "| load avg before → after |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        per_query = "n/a" if r.worker_requests_per_query is None else f"{r.worker_requests_per_query:.3f}"
        lines.append(
            f"| {r.target} | {r.requests} | {r.failures} | {r.p50_ms:.0f} | {r.p95_ms:.0f} | {r.p99_ms:.0f} | "
            f"{r.rps:.1f} | {per_query} | {r.load_before[0]:.2f} → {r.load_after[0]:.2f} |"
        )
    if len(runs) == 2 and runs[1].requests:
        ours, peer = runs
        lines += [
            "",
            "ThinkSearch / peer: "
            f"p50 {ours.p50_ms / peer.p50_ms:.2f}, p99 {ours.p99_ms / peer.p99_ms:.2f}, RPS {ours.rps / peer.rps:.2f}",
        ]
    lines += [""] + [f"![{r.target}]({r.target}.png)" for r in runs]
    text = "\n".join(lines) + "\n"
    (out / "report.md").write_text(text)
    (out / "summary.json").write_text(json.dumps([{k: v for k, v in vars(r).items() if k != "history"} for r in runs]))
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenario", choices=SCENARIOS, default="hot")
    parser.add_argument("--users", type=int, default=8)
    parser.add_argument("--duration", type=int, default=60, help="seconds (ignored with --ramp)")
    parser.add_argument("--ramp", default=None, help="users per step, e.g. 1,4,16 (a LoadTestShape)")
    parser.add_argument("--stage", type=float, default=20.0, help="seconds per ramp step")
    parser.add_argument("--burst-window", type=float, default=2.0, help="burst: seconds one shared query lasts")
    parser.add_argument("--url", default=None, help="a running ThinkSearch (else a local stack is started)")
    parser.add_argument("--collection", default="loadtest")
    parser.add_argument("--api-key", default=os.environ.get("THINKSEARCH_API_KEY"))
    parser.add_argument("--docs", type=int, default=2000, help="local stack: SciFact documents to load")
    parser.add_argument("--think-n", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=64)
    args = parser.parse_args()
    if args.users > 64 or args.duration > 600:
        parser.error("bounded: at most 64 users and 600 s")

    out = RESULTS / f"{dt.datetime.now().strftime('%Y%m%d-%H%M%S')}-{args.scenario}"
    out.mkdir(parents=True, exist_ok=True)
    if args.url:
        stack_cm: contextlib.AbstractContextManager[Stack] = contextlib.nullcontext(
            Stack(url=args.url, collection=args.collection, api_key=args.api_key)
        )
    else:
        stack_cm = local_stack(args)
    runs = []
    with stack_cm as stack:
        runs.append(run_locust(stack, "thinksearch", stack.url, args, out))
    for r in runs:
        plot(r, out / f"{r.target}.png")
    print(report(args, runs, out))
    print(f"report: {out / 'report.md'}")


if __name__ == "__main__":
    main()
