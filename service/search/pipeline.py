"""The search pipeline, top to bottom: cache -> think -> embed -> fuse -> search.

One code path serves a single search, a batch, a two-phase stream and warming: a batch of queries is prepared
(vector cache), cold think queries think concurrently (coalesced with identical ones in flight), every text not
yet embedded goes to the embedder in ONE call, and Qdrant answers all queries in ONE batched call.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
from cachetools import LRUCache

from service.clients.embedder import Embedder
from service.clients.sparse import bm25
from service.clients.thinker import Generation, ThinkerClient, ThinkerError
from service.model.documents import Hit
from service.model.errors import CollectionNotFound
from service.model.profiles import ThinkProfile
from service.model.search import Retrieval, SearchOutcome, SearchSpec, WarmSummary
from service.observability import metrics
from service.redis.cache import CachedQuery, ThoughtCache
from service.search.coalescing import AcrossReplicas, InFlight
from service.settings import Settings
from service.store.base import Fusion, SearchQuery, Store

log = logging.getLogger(__name__)


# One metric child per stage, looked up once: `labels()` per stage per search showed in the hot-path profile.
_STAGE_SECONDS = {name: metrics.STAGE_SECONDS.labels(name) for name in ("cache", "think", "embed", "search")}


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
            self.ms[name] = round(self.ms[name] + elapsed * 1000, 3)
            _STAGE_SECONDS[name].observe(elapsed)

    def done(self) -> dict[str, float]:
        return {**self.ms, "total": round((time.perf_counter() - self.started) * 1000, 3)}


@dataclass
class _Query:
    """One query on its way through the pipeline."""

    request: SearchSpec
    deadline_s: float
    direct_texts: list[str]
    think: bool = False  # thoughts wanted and a worker configured
    reason: str | None = None  # why it fell back to direct mode
    key: str | None = None  # fused-vector cache key
    thought_key: str | None = None
    state: str | None = None  # hit / miss / coalesced
    owner: bool = False  # resolves the in-flight future of `key`
    thoughts: list[str] | None = None  # fresh thoughts, still to embed
    embedded: dict[str, np.ndarray] | None = None  # texts of those thoughts embedded while generating
    entry: CachedQuery | None = None  # the finished think query
    vector: np.ndarray | None = None
    retrieval: Retrieval = "dense"  # what the search used, once it has run


@dataclass(frozen=True)
class _Thinking:
    """What the owner of a cold key found: a finished entry (filled meanwhile) or thoughts to embed."""

    entry: CachedQuery | None = None
    thoughts: list[str] | None = None
    cached: bool = False
    reason: str | None = None  # why there are neither (thinker_error, thinker_overloaded)
    embedded: dict[str, np.ndarray] | None = None  # query texts embedded as their thought finished (THINK_STREAM)


@dataclass
class _Owned:
    """Keys this search owns in flight: on cancellation they are handed over or dropped."""

    tasks: dict[str, tuple[asyncio.Task[_Thinking], str, asyncio.Future]] = field(default_factory=dict)


class SearchPipeline:
    def __init__(
        self,
        settings: Settings,
        profile: ThinkProfile,
        thinker: ThinkerClient | None,
        cache: ThoughtCache,
        embedder: Embedder,
        store: Store,
        replicas: AcrossReplicas,
    ) -> None:
        self.settings = settings
        self.profile = profile
        self.thinker = thinker
        self.cache = cache
        self.embedder = embedder
        self.store = store
        self.in_flight: InFlight[CachedQuery] = InFlight()
        size = settings.query_vector_cache_size
        self._text_vectors: LRUCache[str, np.ndarray] | None = LRUCache(maxsize=size) if size else None
        self._background: set[asyncio.Task] = set()
        self.replicas = replicas
        self._generating = 0  # worker requests in flight from this replica (bounded: THINK_MAX_IN_FLIGHT)
        self._fusion = Fusion(settings.search_fusion, settings.search_rrf_k, settings.search_hybrid_prefetch)

    # --- entry points ---

    async def search(self, collection: str, request: SearchSpec) -> SearchOutcome:
        return (await self.search_batch(collection, [request]))[0]

    async def search_batch(self, collection: str, requests: list[SearchSpec]) -> list[SearchOutcome]:
        timer = StageTimer()
        with timer.stage("cache"):
            queries = await self._prepare(requests)
        cold = [q for q in queries if q.think and q.entry is None]
        if cold and not await self.store.exists(collection):  # no worker time for a 404
            raise CollectionNotFound(collection)
        owned = _Owned()
        try:
            with timer.stage("think"):
                waits = self._start_thinking(cold, owned)
                await asyncio.gather(self._embed_thought_free(cold), *waits)
            with timer.stage("embed"):
                await self._embed_and_fuse(queries)
        except BaseException:
            self._abandon(owned)
            raise
        with timer.stage("search"):
            hits = await self._search(collection, queries)
        timings = timer.done()
        return [self._outcome(q, h, timings) for q, h in zip(queries, hits, strict=True)]

    async def stream(self, collection: str, request: SearchSpec) -> AsyncIterator[SearchOutcome]:
        """Direct-mode results as soon as they exist, then think-mode results (or a degraded final outcome).

        A query whose think vector is cached answers once, in think mode. Cancelling the iteration (a client
        that went away) cancels the thinking unless another search waits on it.
        """
        timer = StageTimer()
        with timer.stage("cache"):
            (query,) = await self._prepare([request])
        if not query.think or query.entry is not None:
            yield (await self.search_batch(collection, [request]))[0]
            return
        if not await self.store.exists(collection):
            raise CollectionNotFound(collection)
        owned = _Owned()
        thinking = asyncio.ensure_future(asyncio.gather(*self._start_thinking([query], owned)))
        try:
            direct = _Query(request, query.deadline_s, query.direct_texts)
            with timer.stage("embed"):
                await self._embed_and_fuse([direct])
            with timer.stage("search"):
                (hits,) = await self._search(collection, [direct])
            yield self._outcome(direct, hits, timer.done(), count=False)
            query.retrieval = direct.retrieval  # a degraded end stands on the direct hits
            with timer.stage("think"):
                await thinking
            if query.reason is not None:
                yield self._outcome(query, hits, timer.done())  # degraded: the direct hits stand
                return
            with timer.stage("embed"):
                await self._embed_and_fuse([query])  # the query's own text comes from the text cache
        except BaseException:
            thinking.cancel()
            self._abandon(owned)
            raise
        with timer.stage("search"):
            (hits,) = await self._search(collection, [query])
        yield self._outcome(query, hits, timer.done())

    async def warm(
        self, queries: list[str], concurrency: int, on_query: Callable[[str], None] | None = None
    ) -> WarmSummary:
        """Think, embed and cache each query ahead of traffic; `concurrency` worker requests in flight.
        `on_query(outcome)` hears each query as it ends: skipped, worker, warmed (coalesced) or failed."""
        gate = asyncio.Semaphore(concurrency)
        deadline_s = self.settings.thinker_timeout_s * 2  # warming waits for the worker, not for a user

        async def one(text: str) -> str:
            request = SearchSpec(query=text, think=True)
            (query,) = await self._prepare([request], deadline_s)
            if query.entry is not None:
                return "skipped"
            if not query.think:
                return "failed"
            async with gate:
                owned = _Owned()
                try:
                    waits = self._start_thinking([query], owned)
                    await asyncio.gather(self._embed_thought_free([query]), *waits)
                    await self._embed_and_fuse([query])
                except BaseException:
                    self._abandon(owned)
                    raise
            if query.entry is None:
                return "failed"
            return "worker" if query.state == "miss" else "warmed"

        async def reported(text: str) -> str:
            outcome = await one(text)
            if on_query is not None:
                on_query(outcome)
            return outcome

        results = await asyncio.gather(*(reported(q) for q in queries))
        worker = results.count("worker")
        return WarmSummary(
            queries=len(queries),
            skipped=results.count("skipped"),
            warmed=results.count("warmed") + worker,
            failed=results.count("failed"),
            worker_requests=worker,
        )

    async def aclose(self) -> None:
        await self.in_flight.cancel_all()
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)

    # --- stages ---

    async def _prepare(self, requests: list[SearchSpec], deadline_s: float | None = None) -> list[_Query]:
        """Decide each query's mode and look its finished think vector up in the cache."""
        queries = []
        for r in requests:
            q = _Query(
                r,
                deadline_s or (r.deadline_ms or self.settings.search_deadline_ms) / 1000,
                self.profile.query_texts(r.query, None),
            )
            wants = self.settings.think_default if r.think is None else r.think
            if self.thinker is None:
                # Without a thinker, an omitted `think` is plain direct mode; only an explicit true is degraded.
                q.reason = "thinker_not_configured" if r.think else None
            elif wants:
                q.think = True
            queries.append(q)
        thinking = [q for q in queries if q.think]
        if not thinking:
            return queries
        model = await self._thinker_model(min(q.deadline_s for q in thinking))
        if model is None:
            for q in thinking:
                q.think, q.reason = False, "thinker_error"
            return queries
        for q in thinking:
            q.key = self.profile.vector_key(q.request.query, model, self.embedder.name)
        keys = list(dict.fromkeys(q.key for q in thinking if q.key))
        if len(keys) == 1:  # the common single search: no gather machinery
            entries = {keys[0]: await self.cache.get_query(keys[0])}
        else:
            entries = dict(zip(keys, await asyncio.gather(*(self.cache.get_query(k) for k in keys)), strict=True))
        for q in thinking:
            if entries.get(q.key) is not None:
                q.entry, q.state = entries[q.key], "hit"
            else:
                q.thought_key = self.profile.cache_key(q.request.query, model)
        return queries

    def _start_thinking(self, cold: list[_Query], owned: _Owned) -> list[Coroutine[None, None, None]]:
        """Claim each distinct cold key (or join its owner) now; the returned waits finish the think stage."""
        groups: dict[str, list[_Query]] = {}
        for q in cold:
            assert q.key is not None
            groups.setdefault(q.key, []).append(q)
        waits = []
        for key, group in groups.items():
            future, own = self.in_flight.claim(key)
            if own:
                first = group[0]
                assert first.thought_key is not None
                task = asyncio.ensure_future(self._thoughts(key, first.thought_key, first.request.query))
                self.in_flight.attach(key, task)
                owned.tasks[key] = (task, first.request.query, future)
                first.owner = True
                for q in group:
                    q.state = "miss" if q is first else "coalesced"
                waits.append(self._await_own(key, group, owned))
            else:
                for q in group:
                    q.state = "coalesced"
                waits.append(self._await_peer(key, group, future))
        return waits

    async def _await_own(self, key: str, group: list[_Query], owned: _Owned) -> None:
        task, query, _ = owned.tasks[key]
        try:
            # shield: past the deadline the work goes on and fills the cache for the next identical query.
            found = await asyncio.wait_for(asyncio.shield(task), min(q.deadline_s for q in group))
        except TimeoutError:
            del owned.tasks[key]
            if len(self._background) < self.settings.think_max_background:
                self._finish_later(key, query, task)
            else:
                # Bounded: under a flood of slow generations, new ones stop here instead of piling up.
                metrics.BACKGROUND_DROPPED.inc()
                self.in_flight.drop(key)
            _degrade(group, "deadline")
            return
        if found.entry is not None:
            self.in_flight.resolve(key, found.entry)
            for q in group:
                q.entry, q.state = found.entry, "hit"
        elif found.thoughts is None:
            self.in_flight.resolve(key, None)
            _degrade(group, found.reason or "thinker_error")
        else:
            for q in group:
                q.thoughts = found.thoughts
                q.embedded = {**(q.embedded or {}), **(found.embedded or {})}
            if found.cached:
                group[0].state = "hit"

    async def _await_peer(self, key: str, group: list[_Query], future: asyncio.Future[CachedQuery | None]) -> None:
        try:
            entry = await asyncio.wait_for(asyncio.shield(future), min(q.deadline_s for q in group))
        except TimeoutError:
            _degrade(group, "deadline")
            return
        finally:
            self.in_flight.leave(key, future)
        if entry is None:
            _degrade(group, "thinker_error")
        for q in group:
            q.entry = entry

    async def _thoughts(self, key: str, thought_key: str, query: str) -> _Thinking:
        # Another replica (or a search that just finished here) may have filled the vector meanwhile.
        entry = await self.cache.get_query(key)
        if entry is not None:
            return _Thinking(entry=entry)
        cached = await self.cache.get(thought_key)
        if cached is not None:
            return _Thinking(thoughts=cached, cached=True)
        if self._generating >= self.settings.think_max_in_flight:
            # Bounded thinking: answer direct now rather than queue behind a swamped worker.
            return _Thinking(reason="thinker_overloaded")

        async def work() -> _Thinking:
            generated = await self._generate(thought_key, query)
            if generated is None:
                return _Thinking(reason="thinker_error")
            return _Thinking(thoughts=generated[0], embedded=generated[1])

        async def done_elsewhere() -> _Thinking | None:
            # The holder stores its thoughts before it releases the lease, and its fused vector a moment later.
            entry = await self.cache.get_query(key)
            if entry is not None:
                return _Thinking(entry=entry)
            thoughts = await self.cache.get(thought_key)
            return _Thinking(thoughts=thoughts, cached=True) if thoughts is not None else None

        # Across replicas: the one holding the thought key's lease asks the worker; the others wait for its result.
        found, _ = await self.replicas.once(thought_key, work, done_elsewhere)
        return found or _Thinking(reason="thinker_error")

    async def _generate(self, thought_key: str, query: str) -> tuple[list[str], dict[str, np.ndarray]] | None:
        """The thoughts, and (THINK_STREAM) the query texts already embedded while the others were generated."""
        assert self.thinker is not None
        self._generating += 1
        metrics.THINKER_IN_FLIGHT.set(self._generating)
        embedded: dict[str, np.ndarray] = {}
        try:
            if self.settings.think_stream:
                generation, embedded = await self._generate_streaming(query)
            else:
                generation = await self.thinker.generate(self.profile.thought_request(query))
        except ThinkerError as exc:
            metrics.THINKER_ERRORS.labels(exc.kind).inc()
            log.warning("thought worker failed: %s", exc)
            return None
        finally:
            self._generating -= 1
            metrics.THINKER_IN_FLIGHT.set(self._generating)
        metrics.THOUGHT_TOKENS.inc(generation.completion_tokens)
        await self.cache.set(thought_key, generation.thoughts)
        return generation.thoughts, embedded

    async def _generate_streaming(self, query: str) -> tuple[Generation, dict[str, np.ndarray]]:
        """Stream the n choices and embed each one's texts as soon as that choice finishes: after the last token
        only the last choice is left to embed (the embedder merges the calls that arrive while it is busy)."""
        assert self.thinker is not None
        started: list[tuple[list[str], asyncio.Future[np.ndarray]]] = []
        seen: set[str] = set()
        known = self._text_vectors if self._text_vectors is not None else {}

        def on_thought(_: int, thought: str) -> None:
            texts = [
                t for t in dict.fromkeys(self.profile.query_texts(query, [thought])) if t not in seen and t not in known
            ]
            seen.update(texts)
            if texts:
                started.append((texts, asyncio.ensure_future(self._embed(texts))))

        try:
            generation = await self.thinker.stream(self.profile.thought_request(query), on_thought)
        except BaseException:
            for _, future in started:
                future.cancel()
            raise
        embedded: dict[str, np.ndarray] = {}
        results = await asyncio.gather(*(f for _, f in started), return_exceptions=True)
        for (texts, _), vectors in zip(started, results, strict=True):
            if isinstance(vectors, BaseException):  # embedded again (and failing cleanly) with the rest
                log.warning("embedding a streamed thought failed: %r", vectors)
                continue
            embedded.update(zip(texts, vectors, strict=True))
        return generation, embedded

    async def _embed_and_fuse(self, queries: list[_Query]) -> None:
        """Every query gets its vector; texts not embedded yet go to the embedder in one call."""
        texts_of: list[list[str] | None] = []
        for q in queries:
            if q.entry is not None:
                q.vector = q.entry.vector
                texts_of.append(None)
            else:
                texts_of.append(self.profile.query_texts(q.request.query, q.thoughts) if q.thoughts else q.direct_texts)
        embedded: dict[str, np.ndarray] = {}
        for q in queries:
            if q.embedded:
                embedded.update(q.embedded)
        known = self._known_vectors(t for texts in texts_of if texts for t in texts if t not in embedded)
        known.update(embedded)
        missing = list(dict.fromkeys(t for texts in texts_of if texts for t in texts if t not in known))
        if missing:
            fresh = dict(zip(missing, await self._embed(missing), strict=True))
            known.update(fresh)
            if self._text_vectors is not None:
                for q in queries:
                    for t in q.direct_texts:
                        if t in fresh:
                            self._text_vectors[t] = fresh[t]
        finished: list[tuple[_Query, CachedQuery]] = []
        for q, texts in zip(queries, texts_of, strict=True):
            if texts is None:
                continue
            q.vector = self.profile.fuse(np.stack([known[t] for t in texts]))
            if q.thoughts is not None:
                q.entry = CachedQuery(q.thoughts, q.vector)
                if q.owner:
                    finished.append((q, q.entry))
        # Cache first, then wake the waiters: a search arriving in between finds the vector in the cache.
        await asyncio.gather(*(self.cache.set_query(q.key, e) for q, e in finished if q.key))
        for q, e in finished:
            assert q.key is not None
            self.in_flight.resolve(q.key, e)

    async def _embed_thought_free(self, queries: list[_Query]) -> None:
        """The texts of the think vector that need no thoughts (HyDE's query), embedded in one call while the worker
        generates, on the core it leaves free: after the last token only the thoughts are left to embed, and a
        degraded answer finds its direct vector ready. Only for keys this search owns (the others get the vector)."""
        wanted = {q.key: self.profile.thought_free_texts(q.request.query) for q in queries if q.owner}
        texts = list(dict.fromkeys(t for ts in wanted.values() for t in ts))
        known = self._known_vectors(texts)
        missing = [t for t in texts if t not in known]
        if missing:
            try:
                fresh = dict(zip(missing, await self._embed(missing), strict=True))
            except Exception as exc:  # embedded again, and failing cleanly, with the thoughts
                log.warning("embedding the queries ahead of their thoughts failed: %r", exc)
                return
            known.update(fresh)
            if self._text_vectors is not None:
                self._text_vectors.update(fresh)
        for q in queries:
            if q.owner:
                q.embedded = {**(q.embedded or {}), **{t: known[t] for t in wanted[q.key]}}

    def _known_vectors(self, texts: Iterable[str]) -> dict[str, np.ndarray]:
        if self._text_vectors is None:
            return {}
        known = {}
        for t in texts:
            vector = self._text_vectors.get(t)
            if vector is not None:
                known[t] = vector
        metrics.QUERY_VECTOR_CACHE.labels("hit").inc(len(known))
        return known

    async def _embed(self, texts: list[str]) -> np.ndarray:
        metrics.QUERY_EMBED_CALLS.labels("search").inc()
        metrics.QUERY_TEXTS_EMBEDDED.inc(len(texts))
        return await self.embedder.embed(texts)

    async def _search(self, collection: str, queries: list[_Query]) -> list[list[Hit]]:
        wants_sparse = any(q.request.retrieval != "dense" for q in queries)
        sparse_side = wants_sparse and await self.store.sparse_side(collection)
        batch = []
        for q in queries:
            assert q.vector is not None
            # Unset: hybrid where the collection has a sparse side; without one, dense whatever was asked.
            q.retrieval = (q.request.retrieval or "hybrid") if sparse_side else "dense"
            sparse = None
            if q.retrieval != "dense":
                # Thoughts feed the BM25 query too, in the profile's sparse form (docs/methods.md).
                thoughts = q.entry.thoughts if q.entry is not None else None
                sparse = bm25().query(self.profile.sparse_texts(q.request.query, thoughts))
            batch.append(
                SearchQuery(
                    q.vector, q.request.top_k, q.request.filter, q.request.hnsw_ef, q.retrieval, sparse, self._fusion
                )
            )
        return await self.store.search_batch(collection, batch)

    # --- helpers ---

    def _abandon(self, owned: _Owned) -> None:
        """This search stops early: finish its keys for whoever still waits (or the cache), else cancel."""
        for key, (task, query, future) in owned.tasks.items():
            if future.done():
                continue
            if self.in_flight.waiters(key) == 0 and not task.done():
                self.in_flight.drop(key)
            else:
                self._finish_later(key, query, task)

    def _finish_later(self, key: str, query: str, task: asyncio.Task[_Thinking]) -> None:
        async def finish() -> None:
            entry = None
            try:
                found = await task
                entry = found.entry
                if entry is None and found.thoughts is not None:
                    texts = self.profile.query_texts(query, found.thoughts)
                    done = found.embedded or {}
                    missing = [t for t in dict.fromkeys(texts) if t not in done]
                    vectors = {**done, **dict(zip(missing, await self._embed(missing) if missing else [], strict=True))}
                    entry = CachedQuery(found.thoughts, self.profile.fuse(np.stack([vectors[t] for t in texts])))
                    await self.cache.set_query(key, entry)
            except Exception:
                log.exception("finishing a query in the background failed")
            finally:
                self.in_flight.resolve(key, entry)

        background = asyncio.ensure_future(finish())
        self._background.add(background)
        background.add_done_callback(self._background.discard)
        self.in_flight.attach(key, background)

    async def _thinker_model(self, deadline_s: float) -> str | None:
        """The cache key needs the model name; asked of the worker once if not configured."""
        assert self.thinker is not None
        model = self.thinker.known_model
        if model is None:
            try:
                model = await asyncio.wait_for(self.thinker.model(), deadline_s)
            except (ThinkerError, TimeoutError) as exc:
                metrics.THINKER_ERRORS.labels(getattr(exc, "kind", "timeout")).inc()
                return None
        return model

    def _outcome(self, q: _Query, hits: list[Hit], timings: dict[str, float], *, count: bool = True) -> SearchOutcome:
        think = q.entry is not None
        mode = "think" if think else "direct"
        if count:
            metrics.SEARCHES.labels(mode).inc()
            if q.state:
                metrics.THOUGHT_CACHE.labels(q.state).inc()
            if q.reason:
                metrics.DEGRADED.labels(q.reason).inc()
        return SearchOutcome(
            hits=hits,
            mode=mode,
            thought_cache=q.state if think else None,
            degraded=q.reason is not None,
            thoughts=q.entry.thoughts if think and q.request.include_thoughts and q.entry else None,
            timings_ms=timings,
            reason=q.reason,
            retrieval=q.retrieval,
        )


def _degrade(group: list[_Query], reason: str) -> None:
    for q in group:
        q.reason = reason
        q.thoughts = None
