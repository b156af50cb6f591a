"""Think profiles: how a query becomes a thought request, which texts get embedded, and how vectors are fused.

Each profile follows its reference method (docs/methods.md); a profile also fixes how documents are formatted
for embedding, so a collection must be searched with the profile it was ingested with.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from functools import cached_property
from typing import Literal

import numpy as np

from service.model.policy import ThinkPolicy
from service.model.thoughts import Sampling, ThoughtRequest
from service.settings import Settings

O1_EMB = "<emb>"


def _normalise(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


def _digest(material: dict[str, object]) -> str:
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()


class ThinkProfile:
    name: str
    api: Literal["chat", "completion"]
    default_prompt: str
    default_sampling: Sampling

    # The query's count in the BM25 query of a think search (a policy may change it).
    SPARSE_QUERY_REPEATS = 1

    def __init__(self, settings: Settings, policy: ThinkPolicy | None = None) -> None:
        """The reference method, then the service's THINK_* settings, then a collection's policy over both."""
        policy = policy or ThinkPolicy()
        self.prompt = policy.prompt or settings.think_prompt or self.default_prompt
        d = self.default_sampling
        self.sampling = Sampling(
            n=policy.n or settings.think_n or d.n,
            temperature=_first(policy.temperature, settings.think_temperature, d.temperature),
            top_p=settings.think_top_p or d.top_p,
            max_tokens=policy.max_tokens or settings.think_max_tokens or d.max_tokens,
        )
        self.query_weight = policy.query_weight  # α of vector fusion; None: the profile's own fusion
        self.sparse_repeats = policy.sparse_query_repeats or self.SPARSE_QUERY_REPEATS

    def thought_request(self, query: str) -> ThoughtRequest:
        return ThoughtRequest(self.api, self.prompt.format(query=query), self.sampling)

    def cache_key(self, query: str, model: str) -> str:
        """Everything that changes the thoughts: profile, model, prompt, sampling, normalised query."""
        return "thinksearch:thought:v1:" + _digest(self._thought_material(query, model))

    def vector_key(self, query: str, model: str, embedder: str) -> str:
        """Everything that changes the fused query vector: the thoughts' key material, the embedder, and the
        document format (it shapes the query texts too, e.g. O1's `<emb>`)."""
        material = {**self._thought_material(query, model), **self._vector_shape, "embedder": embedder}
        return "thinksearch:query:v1:" + _digest(material)

    def _thought_material(self, query: str, model: str) -> dict[str, object]:
        return {**self._thought_shape, "model": model, "query": " ".join(query.split())}

    # Fixed per profile: computed once, not per search.
    @cached_property
    def _thought_shape(self) -> dict[str, object]:
        return {"profile": self.name, "prompt": self.prompt, "sampling": asdict(self.sampling)}

    @cached_property
    def _vector_shape(self) -> dict[str, object]:
        shape: dict[str, object] = {
            "document_format": self.document_text("{title}", "{text}"),
            # The query texts' shape: separators, EOS and markers that are not in the prompt.
            "query_format": self.query_texts("{query}", ["{thought}"]),
        }
        if self.query_weight is not None:
            shape["query_weight"] = self.query_weight
        return shape

    def document_text(self, title: str, text: str) -> str:
        # As MTEB/BEIR embed a document: title + " " + text.
        return f"{title} {text}" if title else text

    def query_texts(self, query: str, thoughts: list[str] | None) -> list[str]:
        """Texts to embed for this query; no thoughts = direct mode."""
        raise NotImplementedError

    def fuse(self, vectors: np.ndarray) -> np.ndarray:
        """One query vector from the embeddings of `query_texts`."""
        return vectors.mean(axis=0)

    def thought_texts(self, query: str, thoughts: list[str]) -> list[str]:
        """The texts of a think vector that carry the thoughts (without the query's own texts)."""
        return [t for t in self.query_texts(query, thoughts) if t not in self.thought_free_texts(query)]

    def think_texts(self, query: str, thoughts: list[str]) -> list[str]:
        """What a think vector embeds: the profile's own texts, or with a query weight α the direct texts first,
        then the thoughts' texts (see fuse_think)."""
        if self.query_weight is None:
            return self.query_texts(query, thoughts)
        return [*self.query_texts(query, None), *self.thought_texts(query, thoughts)]

    def fuse_think(self, vectors: np.ndarray) -> np.ndarray:
        """The think vector from the embeddings of `think_texts`: v = α·q + (1−α)·(the thoughts fused), so that
        α=1 is the direct vector, and α=1/(n+1) HyDE's plain mean."""
        if self.query_weight is None or len(vectors) < 2:
            return self.fuse(vectors)
        alpha = self.query_weight
        return alpha * self.fuse(vectors[:1]) + (1 - alpha) * self.fuse(vectors[1:])

    def thought_free_texts(self, query: str) -> list[str]:
        """The texts of the think-mode vector that do not depend on the thoughts: embedded while they are generated."""
        return []

    def sparse_texts(self, query: str, thoughts: list[str] | None) -> list[str]:
        """Texts of the BM25 query, as one bag of words (their term counts add up); no thoughts = direct mode.
        By default the query and each thought once (HyDE's texts, O1's thoughts without their prompt markers)."""
        if not thoughts:
            return [query]
        return [*[query] * self.sparse_repeats, *thoughts]


class HydeProfile(ThinkProfile):
    """HyDE: n passages; query vector = mean of the embeddings of [query] + passages (unnormalised mean)."""

    name = "hyde"
    api = "chat"
    default_prompt = "Please write a passage to answer the question.\nQuestion: {query}\nPassage:"
    default_sampling = Sampling(n=8, temperature=0.7, top_p=1.0, max_tokens=512)

    def query_texts(self, query: str, thoughts: list[str] | None) -> list[str]:
        return [query, *(thoughts or [])]

    def thought_free_texts(self, query: str) -> list[str]:
        return [query]


class Query2docProfile(ThinkProfile):
    """Query2doc (dense): embed `query [SEP] pseudo_doc`; with n > 1, the mean over pseudo-docs."""

    name = "query2doc"
    api = "chat"
    default_prompt = "Write a passage that answers the given query.\nQuery: {query}\nPassage:"
    default_sampling = Sampling(n=1, temperature=0.7, top_p=1.0, max_tokens=128)

    def __init__(self, settings: Settings, policy: ThinkPolicy | None = None) -> None:
        self.separator = settings.query2doc_separator
        super().__init__(settings, policy)

    def query_texts(self, query: str, thoughts: list[str] | None) -> list[str]:
        if not thoughts:
            return [query]
        return [f"{query}{self.separator}{t}" for t in thoughts]

    # Query2doc's sparse variant: the query repeated five times, then the pseudo-document (its terms would
    # otherwise outweigh the query's).
    SPARSE_QUERY_REPEATS = 5



class O1Profile(ThinkProfile):
    """O1 Embedder: raw completion of `<query>q</query><thought>`; each thought embedded after the prompt with
    EOS and `<emb>`; query vector = mean of the L2-normalised thought vectors (not re-normalised)."""

    name = "o1"
    api = "completion"
    default_prompt = "<query>{query}</query><thought>"
    default_sampling = Sampling(n=3, temperature=0.1, top_p=0.9, max_tokens=128)

    def __init__(self, settings: Settings, policy: ThinkPolicy | None = None) -> None:
        self.eos = settings.think_eos
        super().__init__(settings, policy)

    def document_text(self, title: str, text: str) -> str:
        return super().document_text(title, text) + O1_EMB

    def query_texts(self, query: str, thoughts: list[str] | None) -> list[str]:
        prompt = self.prompt.format(query=query)
        # Direct mode: an empty thought, so the query is still embedded in the format the model was trained on.
        return [f"{prompt}{self._with_eos(t)}{O1_EMB}" for t in (thoughts or [""])]

    def _with_eos(self, thought: str) -> str:
        return thought if thought.endswith(self.eos) else thought + self.eos

    def fuse(self, vectors: np.ndarray) -> np.ndarray:
        return _normalise(vectors).mean(axis=0)


PROFILES: dict[str, type[ThinkProfile]] = {p.name: p for p in (HydeProfile, O1Profile, Query2docProfile)}


def make_profile(settings: Settings, policy: ThinkPolicy | None = None) -> ThinkProfile:
    """The service's profile, or the one a collection's policy names, shaped by that policy."""
    name = (policy.profile if policy else None) or settings.think_profile
    return PROFILES[name](settings, policy)


def _first(*values: float | None) -> float:
    return next(v for v in values if v is not None)
