"""The search pipeline, top to bottom: plan -> think -> vectors -> retrieve -> outcome.

Each step is a module of this package and returns values: a Plan per query (plan.py), a Thought per cold query
(thinking.py), a fused vector per query (vectors.py), hits per query (retrieve.py). One composition serves a
single search, a batch, a two-phase stream and warming: cold think queries think concurrently (coalesced with
identical ones in flight), every text not yet embedded goes to the embedder in one call, and the store answers
all queries in one batched call.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import numpy as np

from service.clients.embedder import Embedder
from service.clients.thinker import ThinkerClient
from service.documents.policies import Policies
from service.model.errors import CollectionNotFound
from service.model.policy import ThinkPolicy
from service.model.search import SearchOutcome, SearchSpec, WarmSummary
from service.observability import metrics
from service.redis.cache import CachedQuery, ThoughtCache
from service.search.coalescing import AcrossReplicas, InFlight
from service.search.plan import Plan, Planner
from service.search.retrieve import Ask, Direct, Found, Retriever
from service.search.thinking import Round, Thinking, Thought
from service.search.timing import StageTimer
from service.search.vectors import QueryVectors, Vectors
from service.settings import Settings
from service.store.base import Store


@dataclass(frozen=True)
class Ready:
    """A query with its vector: in think mode (`think`, whose thoughts also feed BM25) or direct."""

    plan: Plan
    vector: np.ndarray
    think: CachedQuery | None = None
    state: str | None = None  # hit / miss / coalesced, for a query that was to think
    reason: str | None = None  # why a query that was to think answers direct
    publish: bool = False  # made a key's think vector that this search owns
    direct_vector: np.ndarray | None = None  # rank fusion: the direct query's, beside the think vector

    def ask(self) -> Ask:
        spec, profile = self.plan.spec, self.plan.profile
        sparse = profile.sparse_texts(spec.query, self.think.thoughts if self.think else None)
        direct = None
        if self.think is not None and self.plan.think_weight is not None and self.direct_vector is not None:
            direct_sparse = profile.sparse_texts(spec.query, None)
            direct = Direct(self.direct_vector, direct_sparse, self.plan.think_weight)
        return Ask(spec, self.vector, sparse, direct)


class SearchPipeline:
    def __init__(
        self,
        settings: Settings,
        policies: Policies,
        thinker: ThinkerClient | None,
        cache: ThoughtCache,
        embedder: Embedder,
        store: Store,
        replicas: AcrossReplicas,
    ) -> None:
        self.settings = settings
        self.policies = policies
        self.profile = policies.profile(ThinkPolicy())  # the service's own, for collections without a policy
        self.thinker = thinker
        self.cache = cache
        self.embedder = embedder
        self.store = store
        self.planner = Planner(settings, policies, thinker, cache, embedder)
        self.vectors = QueryVectors(settings, embedder)
        self.thinking = Thinking(settings, thinker, cache, replicas, self.vectors)
        self.retriever = Retriever(settings, store)

    @property
    def in_flight(self) -> InFlight[CachedQuery]:
        return self.thinking.in_flight

    # --- entry points ---

    async def search(self, collection: str, spec: SearchSpec) -> SearchOutcome:
        return (await self.search_batch(collection, [spec]))[0]

    async def search_batch(self, collection: str, specs: list[SearchSpec]) -> list[SearchOutcome]:
        timer = StageTimer()
        with timer.stage("cache"):
            plans = await self.planner.plan(collection, specs)
        if any(p.cold for p in plans) and not await self.store.exists(collection):  # no worker time for a 404
            raise CollectionNotFound(collection)
        ready = await self._think_and_embed(plans, timer)
        with timer.stage("search"):
            found = await self.retriever.search(collection, [r.ask() for r in ready])
        timings = timer.done()
        return [_outcome(r, f, timings) for r, f in zip(ready, found, strict=True)]

    async def stream(self, collection: str, spec: SearchSpec) -> AsyncIterator[SearchOutcome]:
        """Direct-mode results as soon as they exist, then think-mode results (or a degraded final outcome).

        A query whose think vector is cached answers once, in think mode. Cancelling the iteration (a client
        that went away) cancels the thinking unless another search waits on it.
        """
        timer = StageTimer()
        with timer.stage("cache"):
            (plan,) = await self.planner.plan(collection, [spec])
        if not plan.cold:
            yield (await self.search_batch(collection, [spec]))[0]
            return
        if not await self.store.exists(collection):
            raise CollectionNotFound(collection)
        think_round = self.thinking.start([plan])
        thinking = asyncio.ensure_future(think_round.wait())
        try:
            with timer.stage("embed"):
                (direct,) = await self._embed([plan.direct()], {}, {})
            with timer.stage("search"):
                (first,) = await self.retriever.search(collection, [direct.ask()])
            yield _outcome(direct, first, timer.done(), count=False)
            with timer.stage("think"):
                (thought,) = await thinking
            if thought.reason is not None:
                degraded = Ready(plan, direct.vector, state=thought.state, reason=thought.reason)
                yield _outcome(degraded, first, timer.done())  # the direct hits stand
                return
            with timer.stage("embed"):
                (ready,) = await self._embed([plan], {0: thought}, {})  # the query's own text is cached
                await think_round.publish(_published([ready]))
        except BaseException:
            thinking.cancel()
            think_round.abandon()
            raise
        with timer.stage("search"):
            (found,) = await self.retriever.search(collection, [ready.ask()])
        yield _outcome(ready, found, timer.done())

    async def warm(
        self, collection: str, queries: list[str], concurrency: int, on_query: Callable[[str], None] | None = None
    ) -> WarmSummary:
        """Think, embed and cache each query ahead of traffic; `concurrency` worker requests in flight.
        `on_query(outcome)` hears each query as it ends: skipped, worker, warmed (coalesced) or failed."""
        gate = asyncio.Semaphore(concurrency)
        deadline_s = self.settings.thinker_timeout_s * 2  # warming waits for the worker, not for a user

        async def one(text: str) -> str:
            (plan,) = await self.planner.plan(collection, [SearchSpec(query=text, think=True)], deadline_s)
            if plan.cached is not None:
                return "skipped"
            if not plan.cold:
                return "failed"
            async with gate:
                (ready,) = await self._think_and_embed([plan], None)
            if ready.think is None:
                return "failed"
            return "worker" if ready.state == "miss" else "warmed"

        async def reported(text: str) -> str:
            outcome = await one(text)
            if on_query is not None:
                on_query(outcome)
            return outcome

        results = await asyncio.gather(*(reported(q) for q in queries))
        return WarmSummary.of(Counter(results), len(queries))

    async def aclose(self) -> None:
        await self.thinking.aclose()

    # --- steps ---

    async def _think_and_embed(self, plans: list[Plan], timer: StageTimer | None) -> list[Ready]:
        """Thinking for the cold plans, then every plan's vector; the keys this search owns are published."""
        stage = timer.stage if timer is not None else lambda _: contextlib.nullcontext()
        cold = [i for i, p in enumerate(plans) if p.cold]
        think_round: Round | None = None
        try:
            with stage("think"):
                # Started inside the stage: the worker call's trace span is a child of this stage's.
                think_round = self.thinking.start([plans[i] for i in cold])
                ahead, thoughts = await asyncio.gather(
                    self.vectors.ahead(think_round.thought_free_texts()), think_round.wait()
                )
            with stage("embed"):
                ready = await self._embed(plans, dict(zip(cold, thoughts, strict=True)), ahead)
                await think_round.publish(_published(ready))
        except BaseException:
            if think_round is not None:
                think_round.abandon()
            raise
        return ready

    async def _embed(self, plans: list[Plan], thoughts: dict[int, Thought], ahead: Vectors) -> list[Ready]:
        """Each plan's vector: a finished think vector as it is; else its texts (the query and its fresh thoughts,
        or the query alone) embedded, those not embedded yet in one call, and fused. A think query with rank fusion
        also gets its direct vector (its query text is usually cached or embedded ahead)."""
        jobs: dict[tuple[int, str], tuple[list[str], Callable[[np.ndarray], np.ndarray]]] = {}
        ready_texts = dict(ahead)
        for i, plan in enumerate(plans):
            thought, profile = thoughts.get(i), plan.profile
            finished = plan.cached is not None or (thought is not None and thought.cached is not None)
            fresh = thought is not None and thought.thoughts is not None
            if fresh:
                assert thought is not None and thought.thoughts is not None
                jobs[(i, "think")] = (profile.think_texts(plan.spec.query, thought.thoughts), profile.fuse_think)
                ready_texts.update(thought.embedded)
            if (not finished and not fresh) or plan.think_weight is not None:  # rank fusion needs it beside
                jobs[(i, "direct")] = (list(plan.direct_texts), profile.fuse)
        cacheable = [t for p in plans for t in p.direct_texts]
        texts, fuses = [t for t, _ in jobs.values()], [f for _, f in jobs.values()]
        vectors = dict(zip(jobs, await self.vectors.fused(texts, ready_texts, cacheable, fuses), strict=True))
        return [
            _ready(plan, thoughts.get(i), vectors.get((i, "think")), vectors.get((i, "direct")))
            for i, plan in enumerate(plans)
        ]


def _ready(plan: Plan, thought: Thought | None, think_vector: np.ndarray | None, direct: np.ndarray | None) -> Ready:
    if plan.cached is not None:
        return Ready(plan, plan.cached.vector, think=plan.cached, state="hit", direct_vector=direct)
    if thought is None:
        assert direct is not None
        return Ready(plan, direct, reason=plan.reason)
    if thought.cached is not None:
        return Ready(plan, thought.cached.vector, think=thought.cached, state=thought.state, direct_vector=direct)
    if thought.thoughts is None:
        assert direct is not None
        return Ready(plan, direct, state=thought.state, reason=thought.reason)
    assert think_vector is not None
    think = CachedQuery(thought.thoughts, think_vector)
    return Ready(plan, think_vector, think, thought.state, publish=thought.owner, direct_vector=direct)


def _published(ready: list[Ready]) -> dict[str, CachedQuery]:
    return {r.plan.key: r.think for r in ready if r.publish and r.plan.key and r.think}


def _outcome(ready: Ready, found: Found, timings: dict[str, float], *, count: bool = True) -> SearchOutcome:
    think = ready.think is not None
    mode = "think" if think else "direct"
    if count:
        metrics.SEARCHES.labels(mode).inc()
        if ready.state:
            metrics.THOUGHT_CACHE.labels(ready.state).inc()
        if ready.reason:
            metrics.DEGRADED.labels(ready.reason).inc()
    return SearchOutcome(
        hits=found.hits,
        mode=mode,
        thought_cache=ready.state if think else None,
        degraded=ready.reason is not None,
        thoughts=ready.think.thoughts if ready.think and ready.plan.spec.include_thoughts else None,
        timings_ms=timings,
        reason=ready.reason,
        retrieval=found.retrieval,
    )
