"""The search pipeline, top to bottom: cache -> think -> embed -> fuse -> search."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from service import metrics
from service.api.protocol import SearchRequest
from service.clients.cache import ThoughtCache
from service.clients.embedder import Embedder
from service.clients.thinker import ThinkerClient, ThinkerError
from service.clients.vectorstore import CollectionNotFound, Hit, VectorStore
from service.search.coalescing import InFlight
from service.search.profiles import ThinkProfile
from service.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SearchOutcome:
    hits: list[Hit]
    mode: str
    thought_cache: str | None
    degraded: bool
    thoughts: list[str] | None
    timings_ms: dict[str, float]


class StageTimer:
    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.ms: dict[str, float] = {"cache": 0.0, "think": 0.0, "embed": 0.0, "search": 0.0}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            elapsed = time.perf_counter() - t0
            self.ms[name] = round(elapsed * 1000, 3)
            metrics.STAGE_SECONDS.labels(name).observe(elapsed)

    def done(self) -> dict[str, float]:
        return {**self.ms, "total": round((time.perf_counter() - self.started) * 1000, 3)}


class SearchPipeline:
    def __init__(
        self,
        settings: Settings,
        profile: ThinkProfile,
        thinker: ThinkerClient | None,
        cache: ThoughtCache,
        embedder: Embedder,
        store: VectorStore,
    ) -> None:
        self.settings = settings
        self.profile = profile
        self.thinker = thinker
        self.cache = cache
        self.embedder = embedder
        self.store = store
        self.in_flight = InFlight()

    async def search(self, collection: str, request: SearchRequest) -> SearchOutcome:
        timer = StageTimer()
        wants_thoughts = self.settings.think_default if request.think is None else request.think
        deadline_s = (request.deadline_ms or self.settings.search_deadline_ms) / 1000
        thoughts: list[str] | None = None
        cache_state: str | None = None
        degraded_reason: str | None = None

        if self.thinker is None:
            # Without a thinker, an omitted `think` is plain direct mode; only an explicit true is degraded.
            degraded_reason = "thinker_not_configured" if request.think else None
        elif wants_thoughts:
            # 1. cache
            with timer.stage("cache"):
                key = await self._thought_key(request.query, deadline_s)
                thoughts = await self.cache.get(key) if key else None
            if key is None:
                degraded_reason = "thinker_error"
            elif thoughts is not None:
                cache_state = "hit"
                metrics.THOUGHT_CACHE.labels("hit").inc()
            else:
                # 2. think (the collection is checked first: no thinker time for a 404)
                if not await self.store.exists(collection):
                    raise CollectionNotFound(collection)
                with timer.stage("think"):
                    thoughts, cache_state, degraded_reason = await self._think(key, request.query, deadline_s)

        # 3. embed and 4. fuse: the query alone in direct mode
        with timer.stage("embed"):
            vectors = await self.embedder.embed(self.profile.query_texts(request.query, thoughts))
            query_vector = self.profile.fuse(vectors)

        # 5. search
        with timer.stage("search"):
            hits = await self.store.search(
                collection, query_vector, request.top_k, request.filter, hnsw_ef=request.hnsw_ef
            )

        mode = "think" if thoughts is not None else "direct"
        metrics.SEARCHES.labels(mode).inc()
        if degraded_reason:
            metrics.DEGRADED.labels(degraded_reason).inc()
        return SearchOutcome(
            hits=hits,
            mode=mode,
            thought_cache=cache_state if mode == "think" else None,
            degraded=degraded_reason is not None,
            thoughts=thoughts if request.include_thoughts and mode == "think" else None,
            timings_ms=timer.done(),
        )

    async def _thought_key(self, query: str, deadline_s: float) -> str | None:
        """The cache key needs the model name; asked of the worker once if not configured."""
        assert self.thinker is not None
        model = self.thinker.known_model
        if model is None:
            try:
                model = await asyncio.wait_for(self.thinker.model(), deadline_s)
            except (ThinkerError, TimeoutError) as exc:
                metrics.THINKER_ERRORS.labels(getattr(exc, "kind", "timeout")).inc()
                return None
        return self.profile.cache_key(query, model)

    async def _think(self, key: str, query: str, deadline_s: float) -> tuple[list[str] | None, str, str | None]:
        """Thoughts, the cache state (miss / coalesced), and why we degraded (None if we did not)."""
        task, coalesced = self.in_flight.join(key, lambda: self._generate(key, query))
        state = "coalesced" if coalesced else "miss"
        metrics.THOUGHT_CACHE.labels(state).inc()
        try:
            # shield: past the deadline the generation goes on and fills the cache for the next identical query.
            thoughts = await asyncio.wait_for(asyncio.shield(task), deadline_s)
        except TimeoutError:
            return None, state, "deadline"
        return thoughts, state, None if thoughts is not None else "thinker_error"

    async def _generate(self, key: str, query: str) -> list[str] | None:
        assert self.thinker is not None
        try:
            generation = await self.thinker.generate(self.profile.thought_request(query))
        except ThinkerError as exc:
            metrics.THINKER_ERRORS.labels(exc.kind).inc()
            log.warning("thought worker failed: %s", exc)
            return None
        metrics.THOUGHT_TOKENS.inc(generation.completion_tokens)
        await self.cache.set(key, generation.thoughts)
        return generation.thoughts

    async def aclose(self) -> None:
        await self.in_flight.cancel_all()
