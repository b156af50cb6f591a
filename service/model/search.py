"""A search as the pipeline takes it and what it answers: the domain's side of the search routes."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from service.model.documents import FilterValue, Hit
from service.model.policy import FusionChoice

Retrieval = Literal["dense", "sparse", "hybrid"]
Mode = Literal["think", "direct"]


@dataclass(frozen=True)
class SearchSpec:
    """One query: what to find, how many, and how (think or not, retrieval, latency budget)."""

    query: str
    top_k: int = 10
    filter: dict[str, FilterValue] | None = None
    think: bool | None = None  # None: the service's default (THINK_DEFAULT)
    include_thoughts: bool = False
    deadline_ms: int | None = None  # None: SEARCH_DEADLINE_MS
    hnsw_ef: int | None = None
    retrieval: Retrieval | None = None  # None: hybrid where the collection has a sparse side, else dense
    fusion: FusionChoice | None = None  # None: the collection's think policy
    # Think policy fields this search sets for itself (a tuning job trying a generation config without writing it
    # to the collection); not in the REST API. `fusion` applies after these.
    policy: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class SearchOutcome:
    hits: list[Hit]
    mode: Mode
    thought_cache: str | None
    degraded: bool
    thoughts: list[str] | None
    timings_ms: dict[str, float]
    reason: str | None = None  # why degraded (deadline, thinker_error, thinker_not_configured)
    retrieval: Retrieval = "dense"  # what answered (a collection without a sparse side answers dense)


@dataclass(frozen=True)
class WarmSummary:
    queries: int
    skipped: int
    warmed: int
    failed: int
    worker_requests: int
    done: int = 0  # queries finished, whatever their outcome

    @classmethod
    def of(cls, outcomes: Mapping[str, int], queries: int) -> WarmSummary:
        """From counts of each query's outcome: skipped (cached), worker (thought now), warmed (coalesced with
        another, or re-embedded) or failed. A query thought now is warmed too."""
        worker = outcomes.get("worker", 0)
        return cls(
            queries=queries,
            skipped=outcomes.get("skipped", 0),
            warmed=outcomes.get("warmed", 0) + worker,
            failed=outcomes.get("failed", 0),
            worker_requests=worker,
            done=sum(outcomes.values()),
        )
