"""Think mode with real weights: SmolLM2-135M-Instruct on vLLM (CPU) through the gateway's REST API.

The tiny generated model proves the wiring only (its thoughts are gibberish); here the thoughts must be English
about the query. Bounded for `make test`: three queries, two thoughts of at most 48 tokens each.
"""

from __future__ import annotations

import re

import pytest

from service.settings import Settings
from tests.support.gateway import Gateway

DOCS = [
    {"id": "tides", "text": "Tides are caused by the gravitational pull of the Moon and the Sun on the oceans."},
    {"id": "plants", "text": "Photosynthesis in plants turns sunlight, water and carbon dioxide into sugar."},
    {"id": "vaccines", "text": "Vaccines train the immune system to recognise and fight viruses and bacteria."},
    {"id": "money", "text": "Inflation erodes the purchasing power of money as prices rise over time."},
]
QUERIES = {  # query -> the document it is about
    "what causes ocean tides": "tides",
    "how does photosynthesis work in plants": "plants",
    "how do vaccines protect people from viruses": "vaccines",
}
N_THOUGHTS = 2
MAX_TOKENS = 48
# Common words: never content words of a query; their share of the thoughts' words marks English text.
COMMON_WORDS = (
    "a an and are as at be by can do does for from has have how in is it its of on or people that the their this "
    "to was were what when where which who why will with work"
)
STOPWORDS = frozenset(COMMON_WORDS.split())


def words(text: str) -> list[str]:
    return re.findall(r"[a-z]+", text.lower())


def stem(word: str) -> str:
    """A crude stem, so that `tides` finds `tide` and `viruses` finds `virus`."""
    return word[: max(4, len(word) - 2)]


@pytest.fixture(scope="module")
def gw(real_vllm):
    settings = Settings(
        _env_file=None,
        qdrant_path=":memory:",
        thinker_url=real_vllm.base_url,
        think_profile="hyde",
        think_n=N_THOUGHTS,
        think_max_tokens=MAX_TOKENS,
        # A real model on 2 shared cores: generous, so a busy machine is not mistaken for a degraded search.
        thinker_timeout_s=120,
        search_deadline_ms=120_000,
    )
    with Gateway(settings) as gateway:
        assert gateway.client.post("/v1/collections", json={"name": "real"}).status_code == 201
        r = gateway.client.post("/v1/collections/real/documents", json={"documents": DOCS})
        assert r.status_code == 200, r.text
        yield gateway


def test_real_thoughts_are_english_about_the_query_and_think_hits_come_back(gw):
    for query, about in QUERIES.items():
        request = {"query": query, "think": True, "include_thoughts": True}
        r = gw.client.post("/v1/collections/real/search", json=request)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["mode"] == "think" and body["degraded"] is False, body
        thoughts = body["thoughts"]
        print(f"{query!r} -> {thoughts!r}")  # shown on failure (or with -s): what the model wrote
        assert len(thoughts) == N_THOUGHTS and all(len(words(t)) >= 3 for t in thoughts), thoughts

        text = " ".join(thoughts)
        letters = sum(c.isascii() and (c.isalpha() or c.isspace()) for c in text)
        assert letters / len(text) >= 0.85, f"not mostly ASCII letters and spaces: {text!r}"
        found = words(text)
        assert sum(w in STOPWORDS for w in found) / len(found) >= 0.15, f"few common English words: {text!r}"
        content = {w for w in words(query) if w not in STOPWORDS}
        shared = {w for w in content if any(t.startswith(stem(w)) for t in found)}
        assert shared, f"no content word of {query!r} ({sorted(content)}) in the thoughts: {text!r}"

        assert body["results"], body
        assert body["results"][0]["id"] == about, body["results"]
