"""Tuning: which think policy pays on a judged sample of a collection, measured through the search pipeline.

Direct mode and a grid of policies (generation configs × fusions) are scored on the same queries. Each search
carries the config it tries (`SearchSpec.policy`), so the collection's stored policy, which live traffic follows,
changes once, at the end, to the winner (thinking off where nothing beats direct). Each generation config has its
thoughts made once (the thought cache keeps them); every fusion then reuses them.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from prometheus_client import REGISTRY

from service.documents.catalog import Catalog
from service.model.search import SearchSpec
from service.search.pipeline import SearchPipeline
from service.search.scoring import latency_percentiles, score, score_per_query

GENERATION_FIELDS = ("profile", "prompt", "n", "max_tokens", "temperature", "sparse_query_repeats")
FUSION_FIELDS = ("method", "query_weight", "think_weight")
SCIFACT_PROMPT = "Please write a scientific paper passage to support/refute the claim.\nClaim: {query}\nPassage:"
DEFAULT_GRID: dict[str, Any] = {
    # "current": the collection's own generation config, as it stands when tuning starts.
    "generation": [{"label": "current"}, {"label": "scifact-prompt", "prompt": SCIFACT_PROMPT}],
    "fusion": [
        {"method": "vector", "query_weight": None},
        {"method": "vector", "query_weight": 0.5},
        {"method": "vector", "query_weight": 0.7},
        *({"method": "rank", "think_weight": w} for w in (0.1, 0.2, 0.3, 0.5)),
    ],
}
TOP_K = 100  # Recall@100 needs the first hundred
# Longer than any generation here: a slow thought answers in think mode instead of falling back to direct.
THINK_DEADLINE_MS = 600_000
# Ranked by nDCG@10, then these; on a full tie the row with fewer worker tokens per query.
ORDER = ("ndcg@10", "recall@100", "mrr@10")


@dataclass(frozen=True)
class GenerationConfig:
    label: str
    fields: dict[str, Any]  # policy fields to try; the ones not named keep the collection's values


@dataclass(frozen=True)
class FusionConfig:
    method: str
    query_weight: float | None = None
    think_weight: float | None = None

    @property
    def label(self) -> str:
        if self.method == "vector":
            return "vector α=" + ("profile" if self.query_weight is None else f"{self.query_weight:g}")
        return "rank w=" + ("0.3 (default)" if self.think_weight is None else f"{self.think_weight:g}")

    def policy(self) -> dict[str, Any]:
        return {"fusion": self.method, "query_weight": self.query_weight, "think_weight": self.think_weight}


@dataclass
class TuneRow:
    generation: str | None  # None: direct mode
    fusion: str | None
    queries: int
    metrics: dict[str, float]
    latency: dict[str, float]
    served: dict[str, int]
    cold_p50_ms: float | None = None  # the generation pass: thoughts made (or found) for each query
    tokens_per_query: float | None = None  # worker tokens per query whose thoughts were made; None: all cached
    policy: dict[str, Any] = field(default_factory=dict)  # what would be written for this row
    winner: bool = False
    # Queries whose nDCG@10 this row raises / lowers against direct's: how much of a small gain is a few queries.
    vs_direct: tuple[int, int] | None = None
    per_query: dict[str, float] = field(default_factory=dict, repr=False)  # nDCG@10 by query (not reported)

    @property
    def label(self) -> str:
        return "direct" if self.generation is None else f"{self.generation} / {self.fusion}"

    @property
    def fully_thought(self) -> bool:
        return self.served.get("think", 0) == self.queries

    def public(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k != "per_query"} | {"label": self.label}

    @classmethod
    def from_public(cls, row: Mapping[str, Any]) -> TuneRow:
        """A row as `public` (and the API) gives it."""
        names = {f.name for f in fields(cls)} - {"per_query"}
        values = {k: v for k, v in row.items() if k in names}
        if values.get("vs_direct") is not None:
            values["vs_direct"] = tuple(values["vs_direct"])
        return cls(**values)


@dataclass
class TuneResult:
    rows: list[TuneRow]
    best: str  # the best think row's label
    thinking: bool  # the policy written turns thinking on
    written: dict[str, Any] | None  # None: a dry run
    original: dict[str, object]  # the collection's policy before (effective)
    policy: dict[str, object]  # and after

    def public(self) -> dict[str, Any]:
        return {**asdict(self), "rows": [r.public() for r in self.rows]}


class TuneFailed(Exception):
    """Tuning could not measure a candidate (e.g. no search was answered in think mode): nothing written."""


def parse_grid(grid: Mapping[str, Any] | None) -> tuple[list[GenerationConfig], list[FusionConfig]]:
    """The default grid, or {"generation": [...] or {field: [values]}, "fusion": [...]}. Raises ValueError."""
    grid = DEFAULT_GRID if grid is None else grid
    if not isinstance(grid, Mapping) or set(grid) - {"generation", "fusion"}:
        raise ValueError("the grid is an object with 'generation' and 'fusion'")
    gens = grid.get("generation", [{}])
    if isinstance(gens, Mapping):  # {field: [values]}: the cross product
        keys = list(gens)
        gens = [dict(zip(keys, values, strict=True)) for values in itertools.product(*gens.values())]
    generations = []
    for i, g in enumerate(gens):
        fields = {k: v for k, v in g.items() if k != "label"}
        if unknown := set(fields) - set(GENERATION_FIELDS):
            raise ValueError(f"generation {i}: unknown {sorted(unknown)}; fields: {', '.join(GENERATION_FIELDS)}")
        label = g.get("label") or (", ".join(f"{k}={v!r}"[:40] for k, v in fields.items()) or "current")
        generations.append(GenerationConfig(label, fields))
    fusions = []
    for i, f in enumerate(grid.get("fusion", DEFAULT_GRID["fusion"])):
        if f.get("method") not in ("vector", "rank") or set(f) - set(FUSION_FIELDS):
            raise ValueError(f"fusion {i}: {{'method': 'vector'|'rank', 'query_weight'?, 'think_weight'?}}")
        fusions.append(FusionConfig(f["method"], f.get("query_weight"), f.get("think_weight")))
    if not generations or not fusions:
        raise ValueError("at least one generation config and one fusion")
    if len({g.label for g in generations}) < len(generations):
        raise ValueError("each generation config needs its own label")
    return generations, fusions


def searches_needed(queries: int, generations: int, fusions: int) -> int:
    """Direct, then per generation config one pass that thinks and one per fusion."""
    return queries * (1 + generations * (1 + fusions))


def thought_tokens() -> float | None:
    """Worker tokens this process has had generated (other traffic on this replica counts too)."""
    return REGISTRY.get_sample_value("thinksearch_thought_tokens_total")


@dataclass
class _Pass:
    run: dict[str, dict[str, float]]
    seconds: list[float]
    served: Counter[str]
    states: Counter[str]  # thought_cache of think answers: miss = this search had the thoughts made


class Tuner:
    """Runs one tuning: the searches, the table, the policy written. `on_search` is called after each search."""

    def __init__(self, pipeline: SearchPipeline, catalog: Catalog) -> None:
        self.pipeline = pipeline
        self.catalog = catalog

    async def run(
        self,
        collection: str,
        queries: Mapping[str, str],
        qrels: Mapping[str, Mapping[str, int]],
        generations: Sequence[GenerationConfig],
        fusions: Sequence[FusionConfig],
        *,
        dry_run: bool = False,
        min_gain: float = 0.0,
        concurrency: int = 4,
        deadline_ms: int = THINK_DEADLINE_MS,
        on_search: Callable[[str], None] = lambda stage: None,
    ) -> TuneResult:
        original = await self.catalog.policy(collection)
        for g in generations:  # a profile the collection cannot take fails now, not after an hour of searches
            await self.catalog.check_policy(collection, g.fields)
        limit = asyncio.Semaphore(concurrency)

        async def measure(stage: str, think: bool, policy: dict[str, Any] | None) -> _Pass:
            async def one(qid: str, text: str) -> tuple[str, Any, float]:
                async with limit:
                    spec = SearchSpec(
                        query=text, top_k=TOP_K, think=think, deadline_ms=deadline_ms if think else None, policy=policy
                    )
                    t0 = time.perf_counter()
                    outcome = await self.pipeline.search(collection, spec)
                    elapsed = time.perf_counter() - t0
                on_search(stage)
                return qid, outcome, elapsed

            result = _Pass({}, [], Counter(), Counter())
            for qid, outcome, elapsed in await asyncio.gather(*(one(q, t) for q, t in queries.items())):
                # A document never ranks against the query it came from (BEIR's rule, as in `eval`).
                result.run[qid] = {h.document.id: h.score for h in outcome.hits if h.document.id != qid}
                result.served[outcome.mode + (" (degraded)" if outcome.degraded else "")] += 1
                if outcome.thought_cache:
                    result.states[outcome.thought_cache] += 1
                result.seconds.append(elapsed)
            return result

        def row(p: _Pass, generation: str | None = None, fusion: str | None = None, **extra: Any) -> TuneRow:
            each = {q: m["ndcg@10"] for q, m in score_per_query(qrels, p.run).items()}
            return TuneRow(
                generation, fusion, len(queries), score(qrels, p.run), latency_percentiles(p.seconds),
                dict(p.served), **extra, per_query=each,
            )  # fmt: skip

        rows = [row(await measure("direct", False, None))]
        for gen in generations:
            before = thought_tokens()
            made = await measure(f"{gen.label}: thinking", True, gen.fields)
            after = thought_tokens()
            if not made.served.get("think"):
                raise TuneFailed(
                    f"{gen.label}: no search was answered in think mode ({dict(made.served)}): "
                    "is the thought worker up?"
                )
            generated = made.states.get("miss", 0)
            per_query = (after - before) / generated if generated and None not in (before, after) else None
            cold = latency_percentiles(made.seconds)["p50_ms"]
            for fusion in fusions:
                policy = {**gen.fields, **fusion.policy()}
                p = await measure(f"{gen.label}: {fusion.label}", True, policy)
                rows.append(
                    row(p, gen.label, fusion.label, cold_p50_ms=cold, tokens_per_query=per_query, policy=policy)
                )

        direct = rows[0]
        for r in rows[1:]:
            diffs = [r.per_query[q] - direct.per_query[q] for q in qrels]
            r.vs_direct = (sum(d > 1e-9 for d in diffs), sum(d < -1e-9 for d in diffs))
        eligible = [r for r in rows[1:] if r.fully_thought]
        if not eligible:
            raise TuneFailed("no policy was measured on every query in think mode: nothing written")
        best = max(eligible, key=lambda r: (*(r.metrics[k] for k in ORDER), -(r.tokens_per_query or 0.0)))
        thinks = best.metrics["ndcg@10"] > direct.metrics["ndcg@10"] + min_gain  # a tie goes to direct: cheaper
        (best if thinks else direct).winner = True
        # Thinking off still keeps the best think config, for searches that ask `think: true` themselves.
        write = {**best.policy, "enabled": thinks}
        final = original
        if not dry_run:
            _, final = await self.catalog.update_policy(collection, write)
        return TuneResult(rows, best.label, thinks, None if dry_run else write, original, final)
