"""A gateway for the search-speed tests: real vLLM, real Redis, real MiniLM (wrapped to count its calls)."""

from __future__ import annotations

import functools

import pytest

from tests.search.test_think import setup_collection, think_settings
from tests.support.gateway import Gateway


class EmbedCalls:
    """Counts calls into the gateway's real embedder (the wrapped method still does the work)."""

    def __init__(self, gw: Gateway) -> None:
        embedder = gw.app.state.services.embedder
        real = embedder.embed
        self.count = 0
        self.texts: list[str] = []  # every query text embedded, in order

        @functools.wraps(real)
        async def counting(texts, **kwargs):
            if not kwargs.get("documents"):
                self.count += 1
                self.texts.extend(texts)
            return await real(texts, **kwargs)

        embedder.embed = counting


@pytest.fixture(scope="module")
def speed_gw(vllm, redis_server):
    with Gateway(think_settings(thinker_url=vllm.base_url, redis_url=redis_server.url)) as gateway:
        gateway.collection = setup_collection(gateway)
        gateway.embed_calls = EmbedCalls(gateway)
        yield gateway
