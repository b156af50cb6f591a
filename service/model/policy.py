"""A collection's think policy: how searches of that collection think, and how thinking joins the answer.

Stored with the collection (set at creation, changed with PATCH), read by every replica. Unset fields take the
service's settings (THINK_*), so a policy says only what differs for its corpus. Everything in it that shapes a
thought or a think vector is part of the cache keys (model/profiles.py).

Fusion decides how much weak thoughts can move an answer:
- `vector`: one think vector, v = α·q + (1−α)·mean(thought vectors) with α = `query_weight`; unset α is the
  profile's own fusion (HyDE: the plain mean of the query and n passages, α = 1/(n+1)).
- `rank`: two searches, the direct query and the think vector, fused by weighted reciprocal rank:
  score(d) = (1−w)/(k+rank_direct(d)) + w/(k+rank_think(d)) with w = `think_weight`; a document only the thoughts
  found can join the answer, but never push the query's own best hits far down.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Literal

Fusion = Literal["vector", "rank"]
DEFAULT_THINK_WEIGHT = 0.3


@dataclass(frozen=True)
class ThinkPolicy:
    enabled: bool | None = None  # `think` of a search that does not say (None: THINK_DEFAULT)
    profile: str | None = None  # None: the collection's own (its documents were embedded in its format)
    prompt: str | None = None  # with `{query}`
    n: int | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    fusion: Fusion | None = None  # None: vector
    query_weight: float | None = None  # α of vector fusion
    think_weight: float | None = None  # w of rank fusion (None: DEFAULT_THINK_WEIGHT)
    sparse_query_repeats: int | None = None  # the query's count in the BM25 query (None: the profile's own)

    def as_meta(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_meta(cls, value: Any) -> ThinkPolicy:
        if not isinstance(value, dict):
            return cls()
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in value.items() if k in known})

    def updated(self, changes: dict[str, Any]) -> ThinkPolicy:
        """This policy with `changes` applied; a field set to None goes back to the service's default."""
        return replace(self, **changes)

    @property
    def rank(self) -> bool:
        return self.fusion == "rank"


@dataclass(frozen=True)
class FusionChoice:
    """A search's own fusion, for experiments (tuning): overrides the collection's."""

    fusion: Fusion
    query_weight: float | None = None
    think_weight: float | None = None
