"""Fusion parity: each profile's query vector equals its reference formula (docs/methods.md) on known vectors."""

from __future__ import annotations

import numpy as np
import pytest
import qdrant_edge as qe

from service.clients.sparse import bm25
from service.model.profiles import HydeProfile, O1Profile, Query2docProfile, make_profile
from service.settings import Settings

RNG = np.random.default_rng(7)


def settings(**kw) -> Settings:
    return Settings(_env_file=None, **kw)


def unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def test_hyde_reference_request_and_fusion():
    p = make_profile(settings(think_profile="hyde"))
    assert isinstance(p, HydeProfile)
    req = p.thought_request("why is the sky blue")
    assert req.api == "chat"
    assert req.prompt == "Please write a passage to answer the question.\nQuestion: why is the sky blue\nPassage:"
    assert (req.sampling.n, req.sampling.temperature, req.sampling.max_tokens) == (8, 0.7, 512)
    thoughts = [f"passage {i}" for i in range(8)]
    assert p.query_texts("q", thoughts) == ["q", *thoughts]  # the query is embedded too
    assert p.query_texts("q", None) == ["q"]
    vectors = RNG.normal(size=(9, 16)).astype(np.float32)
    # Reference: mean of the embeddings of [query] + passages, unnormalised.
    np.testing.assert_allclose(p.fuse(vectors), vectors.sum(axis=0) / 9, rtol=1e-6)


def test_o1_reference_request_texts_and_fusion():
    p = make_profile(settings(think_profile="o1"))
    assert isinstance(p, O1Profile)
    req = p.thought_request("what causes tides")
    assert req.api == "completion"
    assert req.prompt == "<query>what causes tides</query><thought>"
    s = req.sampling
    assert (s.n, s.temperature, s.top_p, s.max_tokens) == (3, 0.1, 0.9, 128)
    texts = p.query_texts("q", ["the moon", "gravity<|endoftext|>"])
    # EOS appended only where missing, prompt kept in front, then <emb>.
    assert texts == [
        "<query>q</query><thought>the moon<|endoftext|><emb>",
        "<query>q</query><thought>gravity<|endoftext|><emb>",
    ]
    assert p.document_text("Title", "body") == "Title body<emb>"
    assert p.document_text("", "body") == "body<emb>"
    vectors = RNG.normal(size=(3, 16)).astype(np.float32) * np.array([[1.0], [5.0], [0.2]], dtype=np.float32)
    fused = p.fuse(vectors)
    # Reference: mean of the L2-normalised thought vectors, not re-normalised.
    expected = (unit(vectors[0]) + unit(vectors[1]) + unit(vectors[2])) / 3
    np.testing.assert_allclose(fused, expected, rtol=1e-5)
    assert np.linalg.norm(fused) < 1.0


def test_query2doc_reference_texts_and_fusion():
    p = make_profile(settings(think_profile="query2doc"))
    assert isinstance(p, Query2docProfile)
    assert p.thought_request("q").sampling.n == 1
    assert p.query_texts("q", ["pseudo doc"]) == ["q [SEP] pseudo doc"]
    assert p.query_texts("q", None) == ["q"]
    v = RNG.normal(size=(1, 8)).astype(np.float32)
    np.testing.assert_allclose(p.fuse(v), v[0])


def test_overrides_replace_reference_values():
    p = make_profile(
        settings(
            think_profile="hyde", think_n=2, think_temperature=0.0, think_max_tokens=64, think_prompt="Q: {query}\nA:"
        )
    )
    req = p.thought_request("x")
    assert req.prompt == "Q: x\nA:"
    assert (req.sampling.n, req.sampling.temperature, req.sampling.max_tokens) == (2, 0.0, 64)


def test_cache_key_normalises_whitespace_and_covers_everything_that_changes_thoughts():
    p = make_profile(settings())
    key = p.cache_key("  why   is\nthe sky blue ", "m")
    assert key == p.cache_key("why is the sky blue", "m")
    assert key != p.cache_key("why is the sky red", "m")
    assert key != p.cache_key("why is the sky blue", "other-model")
    assert key != make_profile(settings(think_n=3)).cache_key("why is the sky blue", "m")
    assert key != make_profile(settings(think_prompt="{query}")).cache_key("why is the sky blue", "m")
    assert key != make_profile(settings(think_profile="o1")).cache_key("why is the sky blue", "m")


@pytest.mark.parametrize("name", ["hyde", "o1", "query2doc"])
def test_direct_mode_is_one_text(name):
    assert len(make_profile(settings(think_profile=name)).query_texts("q", None)) == 1


# --- the sparse (BM25) side: thoughts feed the bag-of-words query too ---


def term_counts(text: str) -> dict[int, float]:
    """Reference: each term's number of occurrences in one string, from BM25's own document weighting with no
    length normalisation (b = 0) and no saturation (k -> infinity: tf * (k + 1) / (tf + k) -> tf)."""
    vector = qe.Bm25(qe.Bm25Config(k=1e9, b=0.0)).embed_document(text)
    return dict(zip(vector.indices, vector.values, strict=True))


def bag(texts: list[str]) -> dict[int, float]:
    vector = bm25().query(texts)
    return dict(zip(vector.indices, vector.values, strict=True))


def test_query2doc_sparse_query_is_the_query_five_times_plus_the_pseudo_document():
    p = make_profile(settings(think_profile="query2doc"))
    query, pseudo = "what causes ocean tides", "Tides are caused by the moon's gravity pulling on the ocean."
    assert p.sparse_texts(query, [pseudo]) == [query] * 5 + [pseudo]
    reference = term_counts(" ".join([query] * 5 + [pseudo]))  # the paper's concatenated BM25 query
    got = bag(p.sparse_texts(query, [pseudo]))
    assert got.keys() == reference.keys()
    for term, weight in reference.items():
        assert got[term] == pytest.approx(weight, rel=1e-6)
    assert max(got.values()) == 6.0  # "ocean": five times from the query, once from the pseudo-document


def test_hyde_and_o1_sparse_queries_are_the_query_plus_the_thoughts():
    thoughts = ["The moon pulls the ocean.", "Gravity of the moon and the sun."]
    for name in ("hyde", "o1"):
        p = make_profile(settings(think_profile=name))
        # O1's prompt markers and <emb> are for its embedder, not for BM25: the raw thoughts go in.
        assert p.sparse_texts("what causes tides", thoughts) == ["what causes tides", *thoughts]
        reference = term_counts(" ".join(["what causes tides", *thoughts]))
        assert bag(p.sparse_texts("what causes tides", thoughts)) == pytest.approx(reference, rel=1e-6)


@pytest.mark.parametrize("name", ["hyde", "o1", "query2doc"])
def test_direct_mode_sparse_query_is_the_query(name):
    p = make_profile(settings(think_profile=name))
    assert p.sparse_texts("why is the sky blue", None) == ["why is the sky blue"]
    assert p.sparse_texts("why is the sky blue", []) == ["why is the sky blue"]
