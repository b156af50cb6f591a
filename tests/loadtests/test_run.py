"""The load-test report: ThinkSearch / peer ratios per scenario, from locust's figures and vLLM's counters."""

from __future__ import annotations

import argparse
import json

from loadtests.run import Run, report


def a_run(scenario: str, target: str, p50: float, rps: float, worker: int, tokens: int) -> Run:
    return Run(
        scenario=scenario, target=target, requests=100, failures=0, p50_ms=p50, p95_ms=2 * p50, p99_ms=3 * p50,
        rps=rps, worker_requests=worker, generated_tokens=tokens, degraded=0,
        load_before=(1.0, 1.0, 1.0), load_after=(2.0, 1.0, 1.0),
    )  # fmt: skip


def test_report_gives_ratios_against_the_peer_per_scenario(tmp_path):
    args = argparse.Namespace(
        users=8, duration=30, ramp=None, stage=20.0, peer=True, url=None, docs=300, max_tokens=64
    )
    runs = [
        a_run("hot", "ThinkSearch (n=8)", 20, 40, 2, 1024),
        a_run("hot", "peer (LangChain HyDE, n=1)", 400, 2, 100, 6400),
        a_run("cold", "ThinkSearch (n=8)", 1000, 4, 100, 51200),
        a_run("cold", "peer (LangChain HyDE, n=1)", 500, 8, 100, 6400),
    ]
    runs[2].stage_ms = {"think": 120.0, "embed": 30.4}  # from ThinkSearch's /metrics
    text = report(args, runs, tmp_path)
    ratios = [line for line in text.splitlines() if line.startswith("| hot |") or line.startswith("| cold |")]
    assert ratios == [
        "| hot | ThinkSearch (n=8) | 0.05 | 0.05 | 20.00 | 0.02 | 0.16 |",
        "| cold | ThinkSearch (n=8) | 2.00 | 2.00 | 0.50 | 1.00 | 8.00 |",
    ]
    assert "| think 120, embed 30 |" in text
    assert "![ThinkSearch (n=8)](hot-thinksearch-n-8.png)" in text
    assert len(json.loads((tmp_path / "summary.json").read_text())) == 4
