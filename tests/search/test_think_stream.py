"""THINK_STREAM: the n choices streamed from vLLM and each embedded as it finishes (off by default)."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

from service.clients.thinker import ThinkerClient
from service.model.thoughts import Sampling, ThoughtRequest
from tests.search.conftest import EmbedCalls
from tests.search.test_think import N_THOUGHTS, search, setup_collection, think_settings, unique
from tests.support.gateway import Gateway


@pytest.mark.parametrize("api", ["chat", "completion"])
def test_streamed_generation_matches_the_plain_one(vllm, api):
    # Greedy (vLLM allows it only with n=1): the same text streamed or not, so the two must agree exactly.
    prompt = "Write a passage about tides."
    greedy = ThoughtRequest(api, prompt, Sampling(n=1, temperature=0.0, top_p=1.0, max_tokens=16))
    sampled = ThoughtRequest(api, prompt, Sampling(n=3, temperature=0.7, top_p=1.0, max_tokens=16))

    async def run():
        client = ThinkerClient(vllm.base_url, model=None, api_key=None, timeout_s=60, max_connections=4)
        try:
            plain = await client.generate(greedy)
            streamed = await client.stream(greedy, lambda i, t: None)
            finished: list[tuple[int, str]] = []
            interleaved = await client.stream(sampled, lambda i, t: finished.append((i, t)))
            return plain, streamed, interleaved, finished
        finally:
            await client.aclose()

    plain, streamed, interleaved, finished = asyncio.run(run())
    assert streamed.thoughts == plain.thoughts and streamed.completion_tokens == plain.completion_tokens > 0
    # n choices interleaved in one stream: each reported once, as it finished, and returned in index order.
    assert sorted(i for i, _ in finished) == [0, 1, 2]
    assert interleaved.thoughts == [t for _, t in sorted(finished)] and interleaved.completion_tokens > 0


@pytest.fixture(scope="module")
def stream_gw(vllm, redis_server):
    settings = think_settings(thinker_url=vllm.base_url, redis_url=redis_server.url, think_stream=True)
    with Gateway(settings) as gateway:
        gateway.collection = setup_collection(gateway)
        gateway.embed_calls = EmbedCalls(gateway)
        yield gateway


def test_streamed_thoughts_give_the_same_vector_as_embedding_them_after(stream_gw, vllm):
    gw = stream_gw
    query = unique("why do tides rise and fall")
    before = vllm.completion_requests()
    body = search(gw, query, include_thoughts=True)
    assert body["mode"] == "think" and body["thought_cache"] == "miss" and not body["degraded"]
    assert len(body["thoughts"]) == N_THOUGHTS
    assert vllm.completion_requests() - before == 1

    pipeline = gw.app.state.services.pipeline
    run = gw.run  # on the gateway's event loop (the embedder's batcher task runs on it)
    key = pipeline.profile.vector_key(query, pipeline.thinker.known_model, pipeline.embedder.name)
    entry = run(pipeline.cache.get_query(key))
    assert entry is not None and entry.thoughts == body["thoughts"]
    texts = pipeline.profile.query_texts(query, body["thoughts"])
    expected = pipeline.profile.fuse(run(pipeline.embedder.embed(texts)))
    np.testing.assert_allclose(entry.vector, expected, atol=1e-5)

    calls = gw.embed_calls.count
    again = search(gw, query)
    assert again["thought_cache"] == "hit" and gw.embed_calls.count == calls  # no embedding the second time


def test_streamed_burst_is_one_generation(stream_gw, vllm):
    gw = stream_gw
    query = unique("how do vaccines train immunity")
    before = vllm.completion_requests()
    bodies: list[dict] = []

    def one() -> None:
        bodies.append(search(gw, query))

    threads = [threading.Thread(target=one) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(bodies) == 16 and all(b["mode"] == "think" for b in bodies)
    assert sorted(b["thought_cache"] for b in bodies).count("miss") == 1
    assert vllm.completion_requests() - before == 1


def test_streamed_search_degrades_past_its_deadline(stream_gw):
    body = search(stream_gw, unique("what erodes money"), deadline_ms=1)
    assert body["mode"] == "direct" and body["degraded"]
