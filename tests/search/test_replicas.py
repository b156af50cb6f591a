"""Several gateway replicas sharing one Redis and one vLLM (real processes), and thinking bounded per replica."""

from __future__ import annotations

import asyncio
import time
import uuid

import httpx
import redis

from tests.search.test_faults import metric
from tests.search.test_think import DOCS, setup_collection, think_settings, unique
from tests.support.gateway import Gateway, spawn_gateway
from tests.support.servers import free_port


def replica_env(redis_url: str, thinker_url: str, **extra: str) -> dict[str, str]:
    return {
        "REDIS_URL": redis_url,
        "THINKER_URL": thinker_url,
        "THINK_N": "2",
        "THINK_MAX_TOKENS": "8",
        "SEARCH_DEADLINE_MS": "60000",
        "LOG_LEVEL": "WARNING",
        **extra,
    }


def load(base: str, collection: str) -> None:
    with httpx.Client(base_url=base, timeout=60) as c:
        c.post("/v1/collections", json={"name": collection}).raise_for_status()
        c.post(f"/v1/collections/{collection}/documents", json={"documents": DOCS}).raise_for_status()


def test_two_replicas_make_one_worker_request_per_cold_query(vllm, redis_server):
    ports = [free_port(), free_port()]
    procs = [spawn_gateway(p, replica_env(redis_server.url, vllm.base_url)) for p in ports]
    try:
        bases = [f"http://127.0.0.1:{p}" for p in ports]
        for base in bases:  # each replica's own embedded store; the thoughts are what they share
            load(base, "shared")
        query = f"what pulls the oceans {uuid.uuid4().hex[:6]}"
        before = vllm.completion_requests()

        async def burst() -> list[dict]:
            async with httpx.AsyncClient(timeout=120) as client:
                sends = [
                    client.post(f"{bases[i % 2]}/v1/collections/shared/search", json={"query": query})
                    for i in range(32)
                ]
                responses = await asyncio.gather(*sends)
            assert all(r.status_code == 200 for r in responses)
            return [r.json() for r in responses]

        bodies = asyncio.run(burst())
        time.sleep(0.5)  # vLLM counts a request just after its last byte
        made = vllm.completion_requests() - before
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(30)
    assert made == 1
    assert all(b["mode"] == "think" and not b["degraded"] for b in bodies)


def test_the_lease_holder_killed_mid_generation_another_replica_answers(vllm, redis_server):
    ports = [free_port(), free_port()]
    env = replica_env(redis_server.url, vllm.base_url, COALESCE_LEASE_MS="1500")
    holder, other = (spawn_gateway(p, env) for p in ports)
    try:
        holder_base, other_base = (f"http://127.0.0.1:{p}" for p in ports)
        load(holder_base, "lease")
        load(other_base, "lease")
        query = f"which body drives the tides {uuid.uuid4().hex[:6]}"
        leases = redis.Redis.from_url(redis_server.url)
        before = set(leases.keys("thinksearch:thought:*:lease"))
        vllm.pause()  # the holder's generation hangs
        try:

            async def scenario() -> httpx.Response:
                async with httpx.AsyncClient(timeout=120) as client:
                    first = asyncio.ensure_future(
                        client.post(f"{holder_base}/v1/collections/lease/search", json={"query": query})
                    )
                    for _ in range(200):  # until the holder has taken the lease
                        if set(leases.keys("thinksearch:thought:*:lease")) - before:
                            break
                        await asyncio.sleep(0.05)
                    else:
                        raise AssertionError("the first replica never took a lease")
                    second = asyncio.ensure_future(
                        client.post(f"{other_base}/v1/collections/lease/search", json={"query": query})
                    )
                    await asyncio.sleep(0.5)  # the second replica is waiting on the lease
                    holder.kill()  # SIGKILL: no release, no renewal; its lease lapses
                    holder.wait(10)
                    vllm.resume()
                    first.cancel()
                    return await second

            answer = asyncio.run(scenario())
        finally:
            vllm.resume()
    finally:
        for proc in (holder, other):
            if proc.poll() is None:
                proc.terminate()
                proc.wait(30)
    assert answer.status_code == 200
    body = answer.json()
    assert body["mode"] == "think" and body["degraded"] is False and body["results"]


def test_worker_requests_are_bounded_per_replica(vllm):
    settings = think_settings(thinker_url=vllm.base_url, think_max_in_flight=1, think_max_background=4)
    with Gateway(settings) as gw:
        name = setup_collection(gw)
        overloaded_before = metric(gw, "thinksearch_degraded_responses_total", reason="thinker_overloaded")
        vllm.pause()
        try:
            # The first cold query takes the one worker slot; past its deadline it goes on in the background.
            first = gw.client.post(f"/v1/collections/{name}/search", json={"query": unique("one"), "deadline_ms": 300})
            # A second distinct cold query finds the slot taken: it answers direct now instead of queueing.
            second = gw.client.post(f"/v1/collections/{name}/search", json={"query": unique("two")})
            in_flight = metric(gw, "thinksearch_thinker_in_flight")
        finally:
            vllm.resume()
        assert first.json()["degraded"] is True
        assert second.json()["mode"] == "direct" and second.json()["degraded"] is True
        assert metric(gw, "thinksearch_degraded_responses_total", reason="thinker_overloaded") == overloaded_before + 1
        assert in_flight == 1.0


def test_late_generations_past_the_background_bound_are_cancelled(vllm):
    settings = think_settings(thinker_url=vllm.base_url, think_max_background=0)
    with Gateway(settings) as gw:
        name = setup_collection(gw)
        dropped_before = metric(gw, "thinksearch_background_generations_dropped_total")
        vllm.pause()
        try:
            late = gw.client.post(f"/v1/collections/{name}/search", json={"query": unique("late"), "deadline_ms": 300})
            for _ in range(50):  # the cancelled request leaves the in-flight count
                if metric(gw, "thinksearch_thinker_in_flight") == 0.0:
                    break
                time.sleep(0.1)
            in_flight = metric(gw, "thinksearch_thinker_in_flight")
        finally:
            vllm.resume()
        assert late.json()["degraded"] is True
        assert metric(gw, "thinksearch_background_generations_dropped_total") == dropped_before + 1
        assert in_flight == 0.0
