"""Failing dependencies with real processes: a hung vLLM opens the thinker's circuit breaker (later searches are
answered without asking it), and it closes again by itself once vLLM is back. Outcomes are read from the
service's own metrics and /readyz, not from timings."""

from __future__ import annotations

import time
import uuid

import pytest
from prometheus_client.parser import text_string_to_metric_families

from service.settings import Settings
from tests.support.gateway import Gateway

DOCS = [{"id": f"d{i}", "text": t} for i, t in enumerate(["Tides follow the Moon.", "Cells divide by mitosis."])]


def metric(gw: Gateway, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(gw.client.get("/metrics").text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return 0.0


def search(gw: Gateway, name: str) -> dict:
    r = gw.client.post(f"/v1/collections/{name}/search", json={"query": f"q {uuid.uuid4().hex[:8]}", "think": True})
    assert r.status_code == 200, r.text
    return r.json()


def test_hung_worker_opens_the_breaker_and_recovery_needs_no_restart(vllm):
    settings = Settings(
        _env_file=None,
        qdrant_path=":memory:",
        thinker_url=vllm.base_url,
        think_n=2,
        think_max_tokens=8,
        thinker_timeout_s=1.0,  # each call to a hung worker costs this much until the breaker opens
        search_deadline_ms=30_000,
        breaker_threshold=2,
        breaker_reset_s=2.0,
    )
    with Gateway(settings) as gw:
        name = "faults"
        assert gw.client.post("/v1/collections", json={"name": name}).status_code == 201
        assert gw.client.post(f"/v1/collections/{name}/documents", json={"documents": DOCS}).status_code == 200
        assert search(gw, name)["mode"] == "think"
        vllm.pause()
        try:
            failing = [search(gw, name) for _ in range(2)]  # two timeouts: the breaker opens
            rejected_before = metric(gw, "thinksearch_circuit_breaker_rejections_total", dependency="thinker")
            while_open = [search(gw, name) for _ in range(3)]
            rejected = (
                metric(gw, "thinksearch_circuit_breaker_rejections_total", dependency="thinker") - rejected_before
            )
            ready_open = gw.client.get("/readyz").json()
            state_open = metric(gw, "thinksearch_circuit_breaker_state", dependency="thinker")
        finally:
            vllm.resume()
        for body in failing + while_open:
            assert body["mode"] == "direct" and body["degraded"] is True and body["results"]
        # The three searches while open (and the readiness probe) never called the worker.
        assert rejected >= 3
        assert metric(gw, "thinksearch_thinker_errors_total", kind="circuit_open") >= 3
        assert state_open == 1.0
        assert ready_open["dependencies"]["thinker"]["breaker"] == "opened"
        assert ready_open["status"] == "degraded"

        time.sleep(settings.breaker_reset_s + 0.5)  # past the reset time: the next call is a probe
        back = search(gw, name)
        assert back["mode"] == "think" and back["degraded"] is False
        assert metric(gw, "thinksearch_circuit_breaker_state", dependency="thinker") == 0.0
        assert gw.client.get("/readyz").json()["dependencies"]["thinker"]["breaker"] == "closed"


def test_searches_under_load_survive_redis_then_vllm_stopping(vllm):
    """Bounded load (4 concurrent clients, 3 s a phase) while Redis, then vLLM, stop and come back."""
    from loadtests.faults import scenario
    from tests.support.servers import RedisServer

    with RedisServer() as redis:
        settings = Settings(
            _env_file=None,
            qdrant_path=":memory:",
            redis_url=redis.url,
            thinker_url=vllm.base_url,
            think_n=2,
            think_max_tokens=8,
            search_deadline_ms=2000,
            breaker_reset_s=2.0,
        )
        with Gateway(settings) as gw:
            report: list[str] = []
            phases = scenario(gw.url, redis, vllm, seconds=3.0, concurrency=4, report=report.append)
            opened = metric(gw, "thinksearch_circuit_breaker_rejections_total", dependency="thinker")
    for name in ("baseline", "redis stopped", "redis restarted", "vllm stopped", "vllm restarted"):
        assert phases[name].total > 0 and phases[name].share(phases[name].statuses, 200) == 1.0, report
    assert phases["baseline"].outcomes["think"] > 0
    # Redis down: thinking goes on (no cache), nothing fails.
    assert phases["redis stopped"].outcomes["think"] > 0
    # vLLM down: what is not a cache hit is answered in degraded direct mode, and the breaker stopped the calls.
    stopped = phases["vllm stopped"]
    assert stopped.outcomes["degraded"] > 0 and stopped.outcomes["think"] <= stopped.cache["hit"]
    assert opened > 0
    # Both came back without restarting the gateway.
    assert all("after None" not in line for line in report), report
    assert phases["vllm restarted"].outcomes["think"] > 0


def test_embedding_server_down_is_503_then_recovers_without_restart(vllm_embed):
    """The remote embedder (vLLM pooling runner) stops: searches and ingests answer 503 with Retry-After, soon
    without calling it (breaker open), nothing stored is lost, and it serves again once the server is back."""
    settings = Settings(
        _env_file=None,
        qdrant_path=":memory:",
        embedder_url=vllm_embed.base_url,
        breaker_threshold=2,
        breaker_reset_s=1.0,
    )
    with Gateway(settings) as gw:
        c = gw.client
        assert c.post("/v1/collections", json={"name": "remote"}).status_code == 201
        assert c.post("/v1/collections/remote/documents", json={"documents": DOCS}).status_code == 200
        before = c.post("/v1/collections/remote/search", json={"query": "moon"}).json()["results"]
        vllm_embed.stop()
        try:
            down = [c.post("/v1/collections/remote/search", json={"query": f"moon {i}"}) for i in range(4)]
            ingest = c.post("/v1/collections/remote/documents", json={"documents": [{"id": "new", "text": "x"}]})
            ready = c.get("/readyz")
            rejected = metric(gw, "thinksearch_circuit_breaker_rejections_total", dependency="embedder")
        finally:
            vllm_embed.start()
        for r in [*down, ingest]:
            assert r.status_code == 503 and int(r.headers["Retry-After"]) > 0
            assert r.headers["content-type"].startswith("application/problem+json")
        assert rejected >= 2  # the later calls were refused by the breaker, not sent
        assert ready.status_code == 503 and ready.json()["dependencies"]["embedder"]["breaker"] == "opened"
        assert c.get("/v1/collections/remote").json()["count"] == len(DOCS)  # nothing stored was lost
        time.sleep(settings.breaker_reset_s + 0.2)
        after = c.post("/v1/collections/remote/search", json={"query": "moon"})
        assert after.status_code == 200 and after.json()["results"] == before
        assert c.get("/readyz").json()["dependencies"]["embedder"]["breaker"] == "closed"


def test_vector_store_down_is_503_then_recovers_without_restart():
    """A Qdrant server (the named test-only stand-in: no Qdrant binary runs here) stops: searches and writes answer
    503 + Retry-After, soon without calling it (breaker open); back on the same folder, nothing stored is lost and
    the gateway serves again without a restart."""
    from tests.support.qdrant_standin import QdrantStandin

    with QdrantStandin() as qdrant:
        settings = Settings(_env_file=None, qdrant_url=qdrant.url, breaker_threshold=2, breaker_reset_s=1.0)
        with Gateway(settings) as gw:
            c = gw.client
            assert c.post("/v1/collections", json={"name": "server"}).status_code == 201
            assert c.post("/v1/collections/server/documents", json={"documents": DOCS}).status_code == 200
            before = c.post("/v1/collections/server/search", json={"query": "moon"}).json()["results"]
            qdrant.stop()
            try:
                down = [c.post("/v1/collections/server/search", json={"query": f"moon {i}"}) for i in range(4)]
                write = c.post("/v1/collections/server/documents", json={"documents": [{"id": "new", "text": "x"}]})
                ready = c.get("/readyz")
                rejected = metric(gw, "thinksearch_circuit_breaker_rejections_total", dependency="vector_store")
            finally:
                qdrant.start()  # the same folder: what was stored is still there
            for r in [*down, write]:
                assert r.status_code == 503 and int(r.headers["Retry-After"]) > 0, r.text
            assert rejected >= 2
            assert ready.status_code == 503 and ready.json()["dependencies"]["vector_store"]["breaker"] == "opened"
            time.sleep(settings.breaker_reset_s + 0.2)
            after = c.post("/v1/collections/server/search", json={"query": "moon"})
            assert after.status_code == 200
            # Reloaded from disk: the same documents in the same order (scores within float32 rounding).
            assert [h["id"] for h in after.json()["results"]] == [h["id"] for h in before]
            scores = [h["score"] for h in after.json()["results"]]
            assert scores == pytest.approx([h["score"] for h in before], abs=1e-6)
            assert c.get("/v1/collections/server").json()["count"] == len(DOCS)
