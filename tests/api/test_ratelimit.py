"""Rate limits: token buckets per key and scope, shared through a real Redis by two gateways, with an in-process
fallback when Redis stops, and per client address when the service is open."""

from __future__ import annotations

import uuid

import pytest
import redis

from service.settings import Settings
from tests.support.gateway import Gateway
from tests.support.servers import RedisServer

DOCS = [{"id": "d1", "text": "Tides follow the Moon."}, {"id": "d2", "text": "Cells divide by mitosis."}]
# Slow refill (one token per 5 s): a test run cannot earn a token back by accident.
LIMITS = {"search": {"rate": 0.2, "burst": 3}}
KEYS = {
    "alpha": ["admin"],
    "beta": ["search"],
    "gamma": {"scopes": ["search"], "rate_limits": {"search": {"rate": 100, "burst": 100}}},
}


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def settings(**overrides) -> Settings:
    return Settings(_env_file=None, qdrant_path=":memory:", rate_limits=LIMITS, **overrides)


def with_collection(gw: Gateway, headers: dict[str, str] | None = None) -> str:
    name = f"r_{uuid.uuid4().hex[:8]}"
    assert gw.client.post("/v1/collections", json={"name": name}, headers=headers).status_code == 201
    r = gw.client.post(f"/v1/collections/{name}/documents", json={"documents": DOCS}, headers=headers)
    assert r.status_code == 200
    return name


def search(gw: Gateway, name: str, key: str | None = None):
    return gw.client.post(f"/v1/collections/{name}/search", json={"query": "moon"}, headers=auth(key) if key else None)


def test_a_key_over_budget_gets_429_on_every_replica(redis_server):
    with (
        Gateway(settings(api_keys=KEYS, redis_url=redis_server.url)) as one,
        Gateway(settings(api_keys=KEYS, redis_url=redis_server.url)) as two,
    ):
        name_one, name_two = with_collection(one, auth("alpha")), with_collection(two, auth("alpha"))
        first = [search(one if i % 2 else two, name_one if i % 2 else name_two, "beta") for i in range(3)]
        assert [r.status_code for r in first] == [200, 200, 200]
        assert [int(r.headers["RateLimit-Remaining"]) for r in first] == [2, 1, 0]
        assert first[0].headers["RateLimit-Limit"] == "3" and first[0].headers["RateLimit-Policy"] == "3;w=15"

        refused = search(one, name_one, "beta")
        also_refused = search(two, name_two, "beta")
        for r in (refused, also_refused):
            assert r.status_code == 429
            assert r.headers["content-type"].startswith("application/problem+json")
            assert 1 <= int(r.headers["Retry-After"]) <= 5
            assert r.headers["RateLimit-Remaining"] == "0"
            assert "search" in r.json()["detail"]

        # Other keys are unaffected; a key with its own larger limit is not held to the default.
        assert search(two, name_two, "alpha").status_code == 200
        assert all(search(one, name_one, "gamma").status_code == 200 for _ in range(6))
        metrics = one.client.get("/metrics").text + two.client.get("/metrics").text
        assert 'thinksearch_rate_limited_total{scope="search"}' in metrics


def test_redis_down_falls_back_to_this_replicas_buckets():
    with RedisServer() as own, Gateway(settings(redis_url=own.url, redis_timeout_s=0.2)) as gw:
        name = with_collection(gw)
        own.stop()
        statuses = [search(gw, name).status_code for _ in range(5)]
        metrics = gw.client.get("/metrics").text
    # Open service: one bucket for this client address, enforced in-process while Redis is down.
    assert statuses == [200, 200, 200, 429, 429]
    assert "thinksearch_rate_limit_fallbacks_total" in metrics
    assert "thinksearch_rate_limit_fallbacks_total 0.0" not in metrics


@pytest.mark.parametrize("redis_backed", [False, True])
def test_open_service_limits_per_client_address(redis_backed, redis_server):
    extra = {"redis_url": redis_server.url} if redis_backed else {}
    # A distinct limit per run keeps this test's bucket apart from the others' in the shared Redis.
    limits = {"search": {"rate": 0.2, "burst": 2}}
    with Gateway(Settings(_env_file=None, qdrant_path=":memory:", rate_limits=limits, **extra)) as gw:
        if redis_backed:
            redis.Redis.from_url(redis_server.url).delete("thinksearch:ratelimit:v1:addr:127.0.0.1:search")
        name = with_collection(gw)
        statuses = [search(gw, name).status_code for _ in range(3)]
        # The ingest scope has no limit configured: unaffected.
        assert gw.client.post(f"/v1/collections/{name}/documents", json={"documents": DOCS}).status_code == 200
    assert statuses == [200, 200, 429]
