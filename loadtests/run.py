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
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tests.support.gateway import spawn_gateway
from tests.support.servers import REPO_ROOT, RedisServer, VLLMServer, free_port, wait_http
from tests.support.tinymodel import build_tiny_model

RESULTS = REPO_ROOT / "loadtests" / "results"
LOCUSTFILE = REPO_ROOT / "loadtests" / "locustfile.py"
SCIFACT = REPO_ROOT.parent / "shared" / "data" / "beir" / "scifact"
SCENARIOS = ("hot", "cold", "burst", "batch", "mixed")
PEER_SCENARIOS = ("hot", "cold", "burst")  # the peer has one search endpoint: no batch, no bulk ingest
PEER_PYTHON = Path(os.environ.get("PEER_PYTHON", REPO_ROOT / "loadtests" / "peers" / ".venv" / "bin" / "python"))
PEER_N = 1  # LangChain's HypotheticalDocumentEmbedder asks the LLM for one passage
# With the peer: every ThinkSearch search waits for its thoughts, as every peer search does (no deadline fallback).
PEER_DEADLINE_MS = 600_000


def load() -> tuple[float, float, float]:
    return os.getloadavg()


@dataclass
class Run:
    """One locust run's aggregate figures."""

    scenario: str
    target: str
    requests: int
    failures: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    rps: float
    worker_requests: int | None
    generated_tokens: int | None
    degraded: int | None
    load_before: tuple[float, float, float]
    load_after: tuple[float, float, float]
    stage_ms: dict[str, float] | None = None  # ThinkSearch: mean ms per pipeline stage (think, embed, search, ...)
    history: list[dict[str, str]] = field(default_factory=list, repr=False)

    @property
    def tokens_per_query(self) -> float | None:
        if self.generated_tokens is None or not self.requests:
            return None
        return self.generated_tokens / self.requests

    @property
    def worker_requests_per_query(self) -> float | None:
        if self.worker_requests is None or not self.requests:
            return None
        return self.worker_requests / self.requests


@dataclass
class Target:
    """One system under test: where locust sends traffic and how it is spelled (TARGET in the locustfile)."""

    name: str
    url: str
    kind: str = "thinksearch"  # or "peer"

    def counters(self) -> dict[str, float] | None:
        """ThinkSearch's degraded answers and per-stage time (sum and count) so far, from its /metrics."""
        if self.kind != "thinksearch":
            return None
        from prometheus_client.parser import text_string_to_metric_families

        try:
            text = httpx.get(f"{self.url}/metrics", timeout=10).text
        except httpx.HTTPError:
            return None
        out: dict[str, float] = defaultdict(float)
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == "thinksearch_degraded_responses_total":
                    out["degraded"] += sample.value
                elif sample.name.startswith("thinksearch_search_stage_duration_seconds_"):
                    suffix = sample.name.rsplit("_", 1)[1]  # sum or count
                    if suffix in ("sum", "count"):
                        out[f"{sample.labels['stage']}_{suffix}"] += sample.value
        return out


def stage_means(before: dict[str, float] | None, after: dict[str, float] | None) -> dict[str, float] | None:
    """Mean milliseconds per pipeline stage during one run (stages that ran)."""
    if before is None or after is None:
        return None
    means = {}
    for key in after:
        if key.endswith("_count") and (count := after[key] - before.get(key, 0.0)) > 0:
            stage = key.removesuffix("_count")
            means[stage] = 1000 * (after[f"{stage}_sum"] - before.get(f"{stage}_sum", 0.0)) / count
    return means


@dataclass
class Stack:
    targets: list[Target]
    collection: str
    vllm: VLLMServer | None = None
    api_key: str | None = None

    @property
    def url(self) -> str:
        return self.targets[0].url

    def worker_requests(self) -> int | None:
        return self.vllm.completion_requests() if self.vllm is not None else None

    def generated_tokens(self) -> int | None:
        """vLLM's generation token counter: the work behind the requests (n thoughts of one request count n)."""
        if self.vllm is None:
            return None
        from prometheus_client.parser import text_string_to_metric_families

        families = text_string_to_metric_families(self.vllm.metrics_text())
        samples = (s for f in families if f.name == "vllm:generation_tokens" for s in f.samples)
        return int(sum(s.value for s in samples if s.name.endswith("_total")))


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


def scifact_jsonl(docs: list[dict], path: Path) -> Path:
    """The same documents for the peer, one {"id", "text"} a line (ThinkSearch embeds title + " " + text too)."""
    lines = (json.dumps({"id": d["id"], "text": f"{d['title']} {d['text']}".strip()}) for d in docs)
    path.write_text("".join(line + "\n" for line in lines))
    return path


@contextlib.contextmanager
def peer_process(vllm: VLLMServer, docs_file: Path, max_tokens: int) -> Iterator[Target]:
    port = free_port()
    env = {
        **os.environ,
        "PEER_THINKER_URL": vllm.base_url,
        "PEER_MODEL": "tiny-think",
        "PEER_MAX_TOKENS": str(max_tokens),
        "PEER_DOCS": str(docs_file),
    }
    argv = [str(PEER_PYTHON), "-m", "uvicorn", "loadtests.peers.hyde_peer:app", "--port", str(port)]
    # Same session as this process (process group only): see tests/support/servers.py on CPU autogroups.
    proc = subprocess.Popen([*argv, "--log-level", "warning"], env=env, cwd=REPO_ROOT, process_group=0)
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", 900, proc=proc)
        yield Target(f"peer (LangChain HyDE, n={PEER_N})", f"http://127.0.0.1:{port}", "peer")
    finally:
        proc.terminate()
        proc.wait(60)


@contextlib.contextmanager
def local_stack(args: argparse.Namespace) -> Iterator[Stack]:
    """Redis, one vLLM worker, ThinkSearch at n=THINK_N; with --peer also ThinkSearch at the peer's n and the peer."""
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        model = build_tiny_model(Path(tmp) / "tiny")
        redis = stack.enter_context(RedisServer())
        vllm = stack.enter_context(VLLMServer(model, "tiny-think"))
        docs = scifact_documents(args.docs)
        ns = [args.think_n, PEER_N] if args.peer and args.think_n != PEER_N else [args.think_n]
        targets = []
        for db, n in enumerate(ns):
            port = free_port()
            env = {
                "REDIS_URL": redis.url.rsplit("/", 1)[0] + f"/{db}",  # a thought cache of its own per n
                "THINKER_URL": vllm.base_url,
                "THINK_N": str(n),
                "THINK_MAX_TOKENS": str(args.max_tokens),
                "LOG_LEVEL": "WARNING",
            }
            if args.peer:
                env["SEARCH_DEADLINE_MS"] = str(PEER_DEADLINE_MS)
            gateway = spawn_gateway(port, env)
            stack.callback(gateway.wait, 30)
            stack.callback(gateway.terminate)
            url = f"http://127.0.0.1:{port}"
            load_documents(url, args.collection, docs, None)
            targets.append(Target(f"ThinkSearch (n={n})", url))
        if args.peer:
            docs_file = scifact_jsonl(docs, Path(tmp) / "docs.jsonl")
            targets.append(stack.enter_context(peer_process(vllm, docs_file, args.max_tokens)))
        yield Stack(targets=targets, collection=args.collection, vllm=vllm)


def run_locust(stack: Stack, target: Target, scenario: str, args: argparse.Namespace, out: Path) -> Run:
    prefix = out / slug(scenario, target)
    env = {
        **os.environ,
        "SCENARIO": scenario,
        "TARGET": target.kind,
        "COLLECTION": stack.collection,
        "BURST_WINDOW_S": str(args.burst_window),
    }
    if stack.api_key:
        env["API_KEY"] = stack.api_key
    command = [
        sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "--host", target.url,
        "--csv", str(prefix), "--csv-full-history", "--only-summary",
    ]  # fmt: skip
    if args.ramp:
        env.update(SHAPE="ramp", RAMP_USERS=args.ramp, STAGE_S=str(args.stage))
    else:
        command += ["-u", str(args.users), "-r", str(args.users), "-t", f"{args.duration}s"]
    before_requests, before_tokens = stack.worker_requests(), stack.generated_tokens()
    before_counters, before_load = target.counters(), load()
    bound = args.duration if not args.ramp else args.stage * len(args.ramp.split(","))
    subprocess.run(command, env=env, check=False, timeout=bound + 120, cwd=REPO_ROOT)
    time.sleep(0.5)  # vLLM counts a request just after its last byte
    after_requests, after_tokens, after_counters = stack.worker_requests(), stack.generated_tokens(), target.counters()
    degraded = (after_counters or {}).get("degraded", 0.0) - (before_counters or {}).get("degraded", 0.0)
    with open(f"{prefix}_stats.csv") as f:
        total = next(r for r in csv.DictReader(f) if r["Name"] == "Aggregated")
    with open(f"{prefix}_stats_history.csv") as f:
        history = [r for r in csv.DictReader(f) if r["Name"] == "Aggregated"]
    return Run(
        scenario=scenario,
        target=target.name,
        requests=int(total["Request Count"]),
        failures=int(total["Failure Count"]),
        p50_ms=float(total["50%"]),
        p95_ms=float(total["95%"]),
        p99_ms=float(total["99%"]),
        rps=float(total["Requests/s"]),
        worker_requests=None if before_requests is None else after_requests - before_requests,
        generated_tokens=None if before_tokens is None else after_tokens - before_tokens,
        degraded=None if before_counters is None or after_counters is None else int(degraded),
        stage_ms=stage_means(before_counters, after_counters),
        load_before=before_load,
        load_after=load(),
        history=history,
    )


def slug(scenario: str, target: Target | str) -> str:
    name = target.name if isinstance(target, Target) else target
    return f"{scenario}-" + "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-").replace("--", "-")


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
    latency.set_title(f"{run.scenario}, {run.target}: latency and throughput over time")
    rate.plot(t, [float(r["Requests/s"]) for r in rows], color="tab:green", label="requests/s")
    rate.set_ylabel("requests/s")
    rate.set_xlabel("seconds")
    users = rate.twinx()
    users.plot(t, [int(r["User Count"]) for r in rows], color="tab:gray", linestyle="--", label="users")
    users.set_ylabel("users")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_comparison(runs: list[Run], path: Path) -> None:
    """p50 and RPS per scenario, one bar per target (log scales: the targets differ by orders of magnitude)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scenarios = list(dict.fromkeys(r.scenario for r in runs))
    targets = list(dict.fromkeys(r.target for r in runs))
    width = 0.8 / len(targets)
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for axis, (label, value) in zip(axes, (("p50 ms", "p50_ms"), ("requests/s", "rps")), strict=True):
        for i, target in enumerate(targets):
            got = {r.scenario: getattr(r, value) for r in runs if r.target == target}
            xs = [j + i * width for j, s in enumerate(scenarios) if s in got]
            axis.bar(xs, [got[s] for s in scenarios if s in got], width, label=target)
        axis.set_xticks([j + width * (len(targets) - 1) / 2 for j in range(len(scenarios))], scenarios)
        axis.set_yscale("log")
        axis.set_ylabel(label)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def ratio(a: float | None, b: float | None) -> str:
    return "n/a" if a is None or b is None or not b else f"{a / b:.2f}"


def run_row(r: Run) -> str:
    per_query = "n/a" if r.worker_requests_per_query is None else f"{r.worker_requests_per_query:.3f}"
    tokens = "n/a" if r.tokens_per_query is None else f"{r.tokens_per_query:.0f}"
    degraded = "n/a" if r.degraded is None else str(r.degraded)
    stages = ", ".join(f"{k} {v:.0f}" for k, v in (r.stage_ms or {}).items()) or "n/a"
    return (
        f"| {r.target} | {r.requests} | {r.failures} | {degraded} | {r.p50_ms:.0f} | {r.p95_ms:.0f} | {r.p99_ms:.0f} "
        f"| {r.rps:.2f} | {per_query} | {tokens} | {stages} | {r.load_before[0]:.2f} → {r.load_after[0]:.2f} |"
    )


def ratio_rows(runs: list[Run]) -> list[str]:
    """ThinkSearch / peer for every ThinkSearch run of a scenario (lower is better but for RPS)."""
    peer = next((r for r in runs if r.target.startswith("peer") and r.requests), None)
    if peer is None:
        return []
    return [
        f"| {r.scenario} | {r.target} | {ratio(r.p50_ms, peer.p50_ms)} | {ratio(r.p99_ms, peer.p99_ms)} | "
        f"{ratio(r.rps, peer.rps)} | {ratio(r.worker_requests_per_query, peer.worker_requests_per_query)} | "
        f"{ratio(r.tokens_per_query, peer.tokens_per_query)} |"
        for r in runs
        if r is not peer and r.requests
    ]


def report(args: argparse.Namespace, runs: list[Run], out: Path) -> str:
    steady = f"{args.users} users, {args.duration} s per target"
    shape = f"ramp {args.ramp} users, {args.stage:.0f} s a step" if args.ramp else steady
    scenarios = list(dict.fromkeys(r.scenario for r in runs))
    lines = [
        f"# Load test: {', '.join(scenarios)}" + (" (with the LangChain HyDE peer)" if args.peer else ""),
        "",
        f"- command: `{' '.join(sys.argv)}`",
        f"- when: {dt.datetime.now(dt.UTC).isoformat(timespec='seconds')}; machine: {platform.machine()}, "
        f"{os.cpu_count()} cores; target: {args.url or 'local stack (Redis, vLLM CPU tiny model, ThinkSearch)'}",
        f"- load: {shape}; {args.docs} SciFact documents; {args.max_tokens} new tokens a thought",
    ]
    if args.peer:
        lines.append(
            f"- one vLLM server, one MiniLM, the same documents for every target; targets take turns, so each "
            f"runs alone on the machine; ThinkSearch with SEARCH_DEADLINE_MS={PEER_DEADLINE_MS} (it waits for its "
            "thoughts, as the peer does); worker requests and generated tokens from vLLM's /metrics"
        )
    ratios = [row for scenario in scenarios for row in ratio_rows([r for r in runs if r.scenario == scenario])]
    if ratios:
        lines += [
            "",
            "## ThinkSearch / peer",
            "",
            "Below 1 is better for ThinkSearch, except RPS (above 1 is better).",
            "",
            "| scenario | ThinkSearch | p50 | p99 | RPS | worker requests / query | generated tokens / query |",
            "|---|---|---|---|---|---|---|",
            *ratios,
            "",
            "![p50 and RPS per scenario and target](comparison.png)",
            "",
            "Worker requests count every request vLLM served during a target's turn, including those still in "
            "flight when locust stopped (at most one per user): where a turn completes few queries (cold), the "
            "per-query figure reads above 1 by about users / requests.",
        ]
    for scenario in scenarios:
        lines += [
            "",
            f"## `{scenario}`",
            "",
            "| target | requests | failures | degraded | p50 ms | p95 ms | p99 ms | RPS | worker requests / query "
            "| generated tokens / query | mean ms per stage | load avg before → after |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|",
            *(run_row(r) for r in runs if r.scenario == scenario),
            "",
            *(f"![{r.target}]({slug(scenario, r.target)}.png)" for r in runs if r.scenario == scenario),
        ]
    text = "\n".join(lines) + "\n"
    (out / "report.md").write_text(text)
    summary = [{k: v for k, v in vars(r).items() if k != "history"} for r in runs]
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenario", default="hot", help=f"one or more of {','.join(SCENARIOS)}, comma-separated")
    parser.add_argument("--peer", action="store_true", help="also ThinkSearch at the peer's n, and the peer")
    parser.add_argument("--users", type=int, default=8)
    parser.add_argument("--duration", type=int, default=60, help="seconds per target (ignored with --ramp)")
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
    scenarios = args.scenario.split(",")
    if set(scenarios) - set(SCENARIOS):
        parser.error(f"--scenario: choose from {', '.join(SCENARIOS)}")
    if args.users > 64 or args.duration > 600 or len(scenarios) > len(SCENARIOS):
        parser.error("bounded: at most 64 users and 600 s")
    if args.peer:
        if args.url:
            parser.error("--peer needs the local stack: the peer shares its vLLM server and documents")
        if set(scenarios) - set(PEER_SCENARIOS):
            parser.error(f"--peer: the peer serves {', '.join(PEER_SCENARIOS)} only")
        if not PEER_PYTHON.exists():
            parser.error(f"the peer's venv is missing ({PEER_PYTHON}): make peer-env")

    out = RESULTS / f"{dt.datetime.now().strftime('%Y%m%d-%H%M%S')}-{'+'.join(scenarios)}{'-peer' if args.peer else ''}"
    out.mkdir(parents=True, exist_ok=True)
    if args.url:
        stack_cm: contextlib.AbstractContextManager[Stack] = contextlib.nullcontext(
            Stack(targets=[Target("ThinkSearch", args.url)], collection=args.collection, api_key=args.api_key)
        )
    else:
        stack_cm = local_stack(args)
    runs = []
    with stack_cm as stack:
        for scenario in scenarios:
            for target in stack.targets:  # in turn: each target has the machine to itself
                runs.append(run_locust(stack, target, scenario, args, out))
    for r in runs:
        plot(r, out / f"{slug(r.scenario, r.target)}.png")
    if len({r.target for r in runs}) > 1:
        plot_comparison(runs, out / "comparison.png")
    print(report(args, runs, out))
    print(f"report: {out / 'report.md'}")


if __name__ == "__main__":
    main()
