"""One embedding per distinct query: coalescing covers think -> embed -> fuse, and the fused vector is cached."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from service.model.profiles import make_profile
from service.settings import Settings
from tests.search.test_think import search, setup_collection, think_settings, unique
from tests.support.gateway import Gateway


def ranked(body: dict) -> list[tuple[str, float]]:
    return [(h["id"], round(h["score"], 6)) for h in body["results"]]


def test_32_identical_cold_queries_make_one_generation_and_one_embedding(speed_gw, vllm):
    gw = speed_gw
    query = unique("what causes the seasons")
    before_vllm, before_embed = vllm.completion_requests(), gw.embed_calls.count
    before_texts = len(gw.embed_calls.texts)

    async def fire() -> list[dict]:
        async with httpx.AsyncClient(base_url=gw.url, timeout=120) as client:
            body = {"query": query, "include_thoughts": True}
            url = f"/v1/collections/{gw.collection}/search"
            responses = await asyncio.gather(*(client.post(url, json=body) for _ in range(32)))
        assert all(r.status_code == 200 for r in responses), [r.text for r in responses]
        return [r.json() for r in responses]

    bodies = asyncio.run(fire())
    assert vllm.completion_requests() - before_vllm == 1
    # One embedding of the query while the worker generates, one of its thoughts after: each text once.
    assert gw.embed_calls.count - before_embed == 2
    embedded = gw.embed_calls.texts[before_texts:]
    assert embedded[0] == query
    assert sorted(embedded) == sorted({query, *bodies[0]["thoughts"]})
    states = [b["thought_cache"] for b in bodies]
    assert states.count("miss") == 1 and "coalesced" in states
    # Every waiter searched with the same fused vector: same thoughts, same ranking and scores.
    assert all(b["mode"] == "think" and not b["degraded"] for b in bodies)
    assert len({tuple(b["thoughts"]) for b in bodies}) == 1
    assert len({tuple(ranked(b)) for b in bodies}) == 1


def test_cached_think_search_makes_no_embedding_and_matches_the_miss(speed_gw, vllm):
    gw = speed_gw
    query = unique("why do leaves change colour")
    miss = search(gw, query, include_thoughts=True, top_k=4)
    before_vllm, before_embed = vllm.completion_requests(), gw.embed_calls.count
    hit = search(gw, query, include_thoughts=True, top_k=4)
    spaced = search(gw, f"  {query}  ", include_thoughts=True, top_k=4)  # the normalised query is the key
    states = [(b["thought_cache"], b["mode"], b["degraded"]) for b in (miss, hit, spaced)]
    assert states == [("miss", "think", False), ("hit", "think", False), ("hit", "think", False)], (states, miss)
    assert vllm.completion_requests() == before_vllm
    assert gw.embed_calls.count == before_embed
    assert hit["thoughts"] == miss["thoughts"]
    assert [h["id"] for h in hit["results"]] == [h["id"] for h in miss["results"]]
    assert [h["score"] for h in hit["results"]] == pytest.approx([h["score"] for h in miss["results"]], abs=1e-6)
    assert hit["timings_ms"]["embed"] < miss["timings_ms"]["embed"] or hit["timings_ms"]["embed"] == 0


def test_a_query_past_its_deadline_answers_with_the_vector_embedded_while_the_worker_ran(speed_gw, vllm):
    gw = speed_gw
    query = unique("how do tides form")
    search(gw, unique("warm the worker connection"))
    before_embed, before_texts = gw.embed_calls.count, len(gw.embed_calls.texts)
    vllm.pause()  # the worker hangs: the search degrades on its deadline
    try:
        body = search(gw, query, deadline_ms=300)
        calls, texts = gw.embed_calls.count - before_embed, gw.embed_calls.texts[before_texts:]
    finally:
        vllm.resume()
    assert body["mode"] == "direct" and body["degraded"], body
    assert (calls, texts) == (1, [query])  # the direct answer did not embed the query a second time


def test_a_repeated_direct_query_is_embedded_once(speed_gw):
    gw = speed_gw
    query = unique("direct repeat")
    first = search(gw, query, think=False)
    before = gw.embed_calls.count
    again = search(gw, query, think=False)
    assert gw.embed_calls.count == before
    assert ranked(again) == ranked(first)


def test_changing_what_shapes_the_thoughts_misses_through_the_shared_cache(speed_gw, vllm, redis_server):
    query = unique("how do magnets work")
    search(speed_gw, query)
    changed = think_settings(thinker_url=vllm.base_url, redis_url=redis_server.url, think_temperature=0.3)
    before = vllm.completion_requests()
    with Gateway(changed) as other:
        other.collection = setup_collection(other)
        body = search(other, query)
    assert body["thought_cache"] == "miss"
    assert vllm.completion_requests() - before == 1


@pytest.mark.parametrize(
    ("base", "change"),
    [
        ({}, {"think_profile": "query2doc"}),
        ({}, {"think_prompt": "Answer: {query}"}),
        ({}, {"think_n": 2}),
        ({}, {"think_temperature": 0.1}),
        ({}, {"think_top_p": 0.5}),
        ({}, {"think_max_tokens": 7}),
        ({"think_profile": "query2doc"}, {"query2doc_separator": " | "}),
        ({"think_profile": "o1"}, {"think_eos": "</s>"}),
    ],
)
def test_every_part_of_the_vector_key_changes_it(base, change):
    key = make_profile(Settings(_env_file=None, **base)).vector_key("q", "model-a", "embedder-a")
    other = make_profile(Settings(_env_file=None, **{**base, **change})).vector_key("q", "model-a", "embedder-a")
    assert key != other


def test_model_embedder_and_query_change_the_vector_key_whitespace_does_not():
    p = make_profile(Settings(_env_file=None))
    key = p.vector_key("why is the sky blue", "model-a", "embedder-a")
    assert p.vector_key("why is the sky blue", "model-b", "embedder-a") != key
    assert p.vector_key("why is the sky blue", "model-a", "embedder-b") != key
    assert p.vector_key("why is the sea blue", "model-a", "embedder-a") != key
    assert p.vector_key("  why is  the sky\nblue ", "model-a", "embedder-a") == key
    # The thought key ignores the embedder: a new embedder re-embeds cached thoughts, it does not regenerate them.
    assert p.cache_key("why is the sky blue", "model-a") != key
