"""Think mode end to end: real vLLM (CPU, tiny generated model), real Redis, real MiniLM, embedded Qdrant."""

from __future__ import annotations

import asyncio
import time
import uuid

import httpx
import numpy as np
import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from service.settings import Settings
from tests.support.gateway import Gateway
from tests.support.servers import RedisServer, free_port

DOCS = [
    {"id": f"d{i}", "text": text}
    for i, text in enumerate(
        [
            "Tides are caused by the gravitational pull of the Moon and the Sun.",
            "Photosynthesis converts light energy into chemical energy.",
            "Vaccines train the immune system to recognise pathogens.",
            "Inflation erodes the purchasing power of money over time.",
        ]
    )
]
N_THOUGHTS = 4


def think_settings(**overrides) -> Settings:
    values = dict(
        _env_file=None,
        qdrant_path=":memory:",
        think_profile="hyde",
        think_n=N_THOUGHTS,
        think_max_tokens=24,
        search_deadline_ms=60_000,
    )
    values.update(overrides)
    return Settings(**values)


def unique(text: str) -> str:
    return f"{text} {uuid.uuid4().hex[:6]}"


def setup_collection(gw: Gateway) -> str:
    name = f"t_{uuid.uuid4().hex[:8]}"
    assert gw.client.post("/v1/collections", json={"name": name}).status_code == 201
    assert gw.client.post(f"/v1/collections/{name}/documents", json={"documents": DOCS}).status_code == 200
    return name


@pytest.fixture(scope="module")
def gw(vllm, redis_server):
    with Gateway(think_settings(thinker_url=vllm.base_url, redis_url=redis_server.url)) as gateway:
        gateway.collection = setup_collection(gateway)
        yield gateway


def degraded_count(gw: Gateway, reason: str) -> float:
    for family in text_string_to_metric_families(gw.client.get("/metrics").text):
        for sample in family.samples:
            if sample.name == "thinksearch_degraded_responses_total" and sample.labels.get("reason") == reason:
                return sample.value
    return 0.0


def search(gw: Gateway, query: str, **extra) -> dict:
    r = gw.client.post(f"/v1/collections/{gw.collection}/search", json={"query": query, **extra})
    assert r.status_code == 200, r.text
    return r.json()


def test_think_search_gets_n_thoughts_from_one_vllm_request(gw, vllm):
    before = vllm.completion_requests()
    body = search(gw, unique("what moves the oceans twice a day"), think=True, include_thoughts=True)
    assert vllm.completion_requests() - before == 1
    assert body["mode"] == "think" and body["thought_cache"] == "miss" and body["degraded"] is False
    assert len(body["thoughts"]) == N_THOUGHTS
    assert body["timings_ms"]["think"] > 0
    assert len(body["results"]) == len(DOCS)


def test_repeated_query_is_a_cache_hit_without_a_vllm_request(gw, vllm, redis_server):
    query = unique("why is the sky blue")
    first = search(gw, query, include_thoughts=True)  # think omitted: THINK_DEFAULT is on with a thinker
    before = vllm.completion_requests()
    again = search(gw, query, include_thoughts=True)
    spaced = search(gw, "  " + query.replace(" ", "   ") + "\n", include_thoughts=True)
    assert vllm.completion_requests() == before
    assert first["thought_cache"] == "miss"
    assert again["thought_cache"] == spaced["thought_cache"] == "hit"
    assert again["thoughts"] == first["thoughts"] == spaced["thoughts"]
    assert [h["id"] for h in again["results"]] == [h["id"] for h in first["results"]]
    # The cache lives in Redis: one entry per distinct query, with a TTL.
    keys = redis.Redis.from_url(redis_server.url).keys("thinksearch:thought:v1:*")
    assert keys and redis.Redis.from_url(redis_server.url).ttl(keys[0]) > 0


def test_cache_is_shared_through_redis_across_gateways(gw, vllm, redis_server):
    query = unique("how do vaccines work")
    first = search(gw, query, include_thoughts=True)
    before = vllm.completion_requests()
    with Gateway(think_settings(thinker_url=vllm.base_url, redis_url=redis_server.url)) as other:
        other.collection = setup_collection(other)  # its own embedded store: the cache is what they share
        body = search(other, query, include_thoughts=True)
    assert body["thought_cache"] == "hit" and body["thoughts"] == first["thoughts"]
    assert vllm.completion_requests() == before


def test_32_concurrent_identical_cold_queries_make_one_vllm_request(gw, vllm):
    query = unique("what causes inflation")
    before = vllm.completion_requests()

    async def fire() -> list[dict]:
        async with httpx.AsyncClient(base_url=gw.url, timeout=120) as client:
            responses = await asyncio.gather(
                *(client.post(f"/v1/collections/{gw.collection}/search", json={"query": query}) for _ in range(32))
            )
        assert all(r.status_code == 200 for r in responses)
        return [r.json() for r in responses]

    bodies = asyncio.run(fire())
    assert vllm.completion_requests() - before == 1
    states = [b["thought_cache"] for b in bodies]
    assert states.count("miss") == 1
    assert set(states) <= {"miss", "coalesced", "hit"} and "coalesced" in states
    assert all(b["mode"] == "think" and not b["degraded"] for b in bodies)


def test_think_false_makes_no_vllm_request(gw, vllm):
    before = vllm.completion_requests()
    body = search(gw, unique("photosynthesis"), think=False, include_thoughts=True)
    assert vllm.completion_requests() == before
    assert body["mode"] == "direct" and body["thought_cache"] is None and body["thoughts"] is None
    assert body["degraded"] is False


def test_thoughts_are_fused_as_hyde_says(gw):
    """Scores equal cosine similarity against mean(embed([query] + thoughts)), computed here independently."""
    from sentence_transformers import SentenceTransformer

    from service.clients.local_embedder import _resolve_local_model

    query = unique("tides and the moon")
    body = search(gw, query, include_thoughts=True, top_k=len(DOCS), retrieval="dense")  # cosine scores
    model = SentenceTransformer(_resolve_local_model(None), device="cpu")
    fused = model.encode([query, *body["thoughts"]]).mean(axis=0)
    docs = model.encode([d["text"] for d in DOCS])
    expected = docs @ fused / (np.linalg.norm(docs, axis=1) * np.linalg.norm(fused))
    got = {h["id"]: h["score"] for h in body["results"]}
    for doc, score in zip(DOCS, expected, strict=True):
        assert got[doc["id"]] == pytest.approx(float(score), abs=1e-4)


def redis_breaker_closed(gw: Gateway, timeout_s: float = 60.0) -> None:
    """A burst earlier in the module (32 concurrent searches on two busy cores) can time out the fail-fast Redis
    client often enough to open its breaker: probe until it has closed again, so the cache is in play."""
    deadline = time.monotonic() + timeout_s
    while gw.app.state.services.breakers.state("redis") != "closed":
        assert time.monotonic() < deadline, "the Redis breaker stayed open"
        search(gw, unique("a probe of the cache"), think=False)  # a direct search reads the vector cache
        time.sleep(0.5)


def test_hung_worker_degrades_at_the_deadline_and_fills_the_cache_later(gw, vllm):
    redis_breaker_closed(gw)
    query = unique("what is the immune system")
    before = vllm.completion_requests()
    deadline_misses = degraded_count(gw, "deadline")
    vllm.pause()
    try:
        body = search(gw, query, deadline_ms=700)
    finally:
        vllm.resume()
    assert body["mode"] == "direct" and body["degraded"] is True and body["thought_cache"] is None
    # Degraded by the deadline, not by the thinker's own timeout or an error.
    assert degraded_count(gw, "deadline") == deadline_misses + 1
    # The generation went on in the background: the next identical query is a hit.
    for _ in range(120):
        again = search(gw, query, deadline_ms=60_000)
        if again["thought_cache"] == "hit":
            break
        time.sleep(0.5)
    assert again["thought_cache"] == "hit" and again["mode"] == "think"
    assert vllm.completion_requests() - before == 1


def test_worker_error_degrades(vllm):
    # max_tokens beyond the worker's context: vLLM answers 400, the search still answers.
    settings = think_settings(thinker_url=vllm.base_url, think_max_tokens=5000)
    with Gateway(settings) as gw:
        gw.collection = setup_collection(gw)
        body = search(gw, unique("anything"))
        metrics = gw.client.get("/metrics").text
    assert body["mode"] == "direct" and body["degraded"] is True
    assert 'thinksearch_thinker_errors_total{kind="http_400"}' in metrics
    assert 'thinksearch_degraded_responses_total{reason="thinker_error"}' in metrics


def test_unreachable_worker_degrades_and_readiness_says_so():
    dead = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there: a stopped worker
    with Gateway(think_settings(thinker_url=dead)) as gw:
        gw.collection = setup_collection(gw)
        explicit = search(gw, unique("tides"), think=True)
        default = search(gw, unique("tides"))
        ready = gw.client.get("/readyz")
    for body in (explicit, default):
        assert body["mode"] == "direct" and body["degraded"] is True and body["results"]
    assert ready.status_code == 200
    assert ready.json()["status"] == "degraded" and ready.json()["dependencies"]["thinker"]["ok"] is False


def test_redis_down_searches_still_answer(vllm):
    with RedisServer() as own_redis, Gateway(think_settings(thinker_url=vllm.base_url, redis_url=own_redis.url)) as gw:
        gw.collection = setup_collection(gw)
        query = unique("money and prices")
        assert search(gw, query)["thought_cache"] == "miss"
        assert search(gw, query)["thought_cache"] == "hit"
        own_redis.stop()
        during = [search(gw, query), search(gw, unique("new question"))]
        ready = gw.client.get("/readyz").json()
        metrics = gw.client.get("/metrics").text
        own_redis.start()
        after = search(gw, unique("back again"))
    for body in during:
        assert body["mode"] == "think" and body["thought_cache"] == "miss" and not body["degraded"]
    assert ready["status"] == "degraded" and ready["dependencies"]["thought_cache"]["ok"] is False
    assert 'thinksearch_thought_cache_errors_total{op="get"}' in metrics
    assert after["mode"] == "think"


def test_stopped_worker_degrades_then_recovers(gw, vllm):
    """The real worker stops (its pooled keep-alive connections die with it), then comes back on the same port."""
    known = unique("warm the connection pool")
    assert search(gw, known)["mode"] == "think"
    vllm.stop()
    try:
        down = search(gw, unique("while the worker is down"))
        hit = search(gw, known)  # cached thoughts need no worker
    finally:
        vllm.start()
    assert down["mode"] == "direct" and down["degraded"] is True and down["results"]
    assert hit["mode"] == "think" and hit["thought_cache"] == "hit" and not hit["degraded"]
    back = search(gw, unique("after the restart"), include_thoughts=True)
    assert back["mode"] == "think" and not back["degraded"] and len(back["thoughts"]) == N_THOUGHTS
