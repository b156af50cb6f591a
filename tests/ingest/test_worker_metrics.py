"""A separate `thinksearch worker --metrics-port` serves its own ingestion metrics (what the chart's PodMonitor and
the compose Prometheus scrape): the figures of the batches it embedded and wrote, not the gateway's."""

from __future__ import annotations

import sys

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.ingest.support import NDJSON, ServiceProcess, ndjson, scifact, wait_job
from tests.support.qdrant_standin import QdrantStandin
from tests.support.servers import free_port, wait_http


class WorkerWithMetrics(ServiceProcess):
    def __init__(self, env: dict[str, str]) -> None:
        super().__init__("worker", env)
        self.metrics_port = free_port()

    def start(self) -> None:
        argv = [sys.executable, "-m", "service.cli", "worker", "--metrics-port", str(self.metrics_port)]
        self._spawn(argv, env=self.env)
        wait_http(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=120, proc=self._proc)

    def samples(self) -> dict[tuple[str, tuple], float]:
        text = httpx.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10).text
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }


def test_a_separate_worker_serves_the_metrics_of_its_own_batches(redis_url: str):
    docs = scifact(48, offset=4200, text_chars=200)
    with QdrantStandin() as qdrant:
        env = {"QDRANT_URL": qdrant.url, "REDIS_URL": redis_url, "INGEST_BATCH_SIZE": "16"}
        with (
            ServiceProcess("serve", {**env, "INGEST_WORKER": "false"}) as gateway,
            WorkerWithMetrics(env) as worker,
            httpx.Client(base_url=gateway.url, timeout=120) as client,
        ):
            assert client.post("/v1/collections", json={"name": "scraped"}).status_code == 201
            r = client.post("/v1/collections/scraped/documents/bulk", content=ndjson(docs), headers=NDJSON)
            assert r.status_code == 202, r.text
            job = wait_job(client, r.json()["job_id"])
            assert job["status"] == "succeeded", job
            samples = worker.samples()
    assert samples[("thinksearch_ingest_documents_total", (("outcome", "ingested"),))] == len(docs)
    assert samples[("thinksearch_ingest_batch_size_count", ())] >= len(docs) / 16
    for stage in ("embed", "write"):
        assert samples[("thinksearch_ingest_stage_duration_seconds_count", (("stage", stage),))] >= 1
