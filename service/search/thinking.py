"""Step 2: cold think queries get their thoughts — one worker request per distinct key, however many searches
want it, in this process (InFlight) and across replicas (AcrossReplicas).

A search's `Round` claims each distinct key at once: the first search of a key owns it and runs the work (thought
cache, then the worker under a cross-replica lease); identical searches arriving meanwhile wait for the owner's
finished think vector. Work past its search's deadline goes on in the background to fill the cache (bounded:
THINK_MAX_BACKGROUND); a search that stops early hands its keys over to that background work when others still
wait, else cancels them.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

import numpy as np

from service.clients.thinker import ThinkerClient, ThinkerError
from service.model.profiles import ThinkProfile
from service.model.thoughts import Generation
from service.observability import metrics
from service.redis.cache import CachedQuery, ThoughtCache
from service.search.coalescing import AcrossReplicas, InFlight
from service.search.plan import Plan
from service.search.vectors import QueryVectors, Vectors
from service.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Thought:
    """What thinking gave one cold query: a finished think vector, fresh thoughts to embed, or why neither."""

    state: str  # miss (this search had the thoughts made), coalesced (another search did), hit (found done)
    cached: CachedQuery | None = None
    thoughts: list[str] | None = None
    embedded: Vectors = field(default_factory=dict)  # texts of the thoughts embedded while generating
    reason: str | None = None  # deadline, thinker_error, thinker_overloaded
    owner: bool = False  # publishes the finished vector for whoever waits on the key


@dataclass(frozen=True)
class _Found:
    """What the owner's work found: a finished entry (filled meanwhile), thoughts to embed, or why neither."""

    entry: CachedQuery | None = None
    thoughts: list[str] | None = None
    cached: bool = False  # the thoughts came from the thought cache
    reason: str | None = None
    embedded: Vectors = field(default_factory=dict)


@dataclass(frozen=True)
class _Owned:
    task: asyncio.Task[_Found]
    query: str
    profile: ThinkProfile
    future: asyncio.Future[CachedQuery | None]


class Thinking:
    """The replica's thinking: keys in flight, worker requests in flight (bounded), background finishing."""

    def __init__(
        self,
        settings: Settings,
        thinker: ThinkerClient | None,
        cache: ThoughtCache,
        replicas: AcrossReplicas,
        vectors: QueryVectors,
    ) -> None:
        self.settings = settings
        self.thinker = thinker
        self.cache = cache
        self.replicas = replicas
        self.vectors = vectors
        self.in_flight: InFlight[CachedQuery] = InFlight()
        self._background: set[asyncio.Task[None]] = set()
        self._generating = 0  # worker requests in flight from this replica (bounded: THINK_MAX_IN_FLIGHT)

    def start(self, cold: list[Plan]) -> Round:
        return Round(self, cold)

    async def aclose(self) -> None:
        await self.in_flight.cancel_all()
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)

    # --- the owner's work ---

    async def find(self, key: str, thought_key: str, query: str, profile: ThinkProfile) -> _Found:
        # Another replica (or a search that just finished here) may have filled the vector meanwhile.
        entry = await self.cache.get_query(key)
        if entry is not None:
            return _Found(entry=entry)
        cached = await self.cache.get(thought_key)
        if cached is not None:
            return _Found(thoughts=cached, cached=True)
        if self._generating >= self.settings.think_max_in_flight:
            # Bounded thinking: answer direct now rather than queue behind a swamped worker.
            return _Found(reason="thinker_overloaded")

        async def work() -> _Found:
            generated = await self._generate(thought_key, query, profile)
            if generated is None:
                return _Found(reason="thinker_error")
            return _Found(thoughts=generated[0], embedded=generated[1])

        async def done_elsewhere() -> _Found | None:
            # The holder stores its thoughts before it releases the lease, and its fused vector a moment later.
            entry = await self.cache.get_query(key)
            if entry is not None:
                return _Found(entry=entry)
            thoughts = await self.cache.get(thought_key)
            return _Found(thoughts=thoughts, cached=True) if thoughts is not None else None

        # Across replicas: the one holding the thought key's lease asks the worker; the others wait for its result.
        found, _ = await self.replicas.once(thought_key, work, done_elsewhere)
        return found or _Found(reason="thinker_error")

    async def _generate(self, thought_key: str, query: str, profile: ThinkProfile) -> tuple[list[str], Vectors] | None:
        """The thoughts, and (THINK_STREAM) the query texts already embedded while the others were generated."""
        assert self.thinker is not None
        self._generating += 1
        metrics.THINKER_IN_FLIGHT.set(self._generating)
        embedded: Vectors = {}
        try:
            if self.settings.think_stream:
                generation, embedded = await self._generate_streaming(query, profile)
            else:
                generation = await self.thinker.generate(profile.thought_request(query))
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

    async def _generate_streaming(self, query: str, profile: ThinkProfile) -> tuple[Generation, Vectors]:
        """Stream the n choices and embed each one's texts as soon as that choice finishes: after the last token
        only the last choice is left to embed (the embedder merges the calls that arrive while it is busy)."""
        assert self.thinker is not None
        started: list[tuple[list[str], asyncio.Future[np.ndarray]]] = []
        seen: set[str] = set()

        def on_thought(_: int, thought: str) -> None:
            texts = [
                t
                for t in dict.fromkeys(profile.think_texts(query, [thought]))
                if t not in seen and not self.vectors.remembered(t)
            ]
            seen.update(texts)
            if texts:
                started.append((texts, asyncio.ensure_future(self.vectors.embed(texts))))

        try:
            generation = await self.thinker.stream(profile.thought_request(query), on_thought)
        except BaseException:
            for _, future in started:
                future.cancel()
            raise
        embedded: Vectors = {}
        results = await asyncio.gather(*(f for _, f in started), return_exceptions=True)
        for (texts, _), vectors in zip(started, results, strict=True):
            if isinstance(vectors, BaseException):  # embedded again (and failing cleanly) with the rest
                log.warning("embedding a streamed thought failed: %r", vectors)
                continue
            embedded.update(zip(texts, vectors, strict=True))
        return generation, embedded

    # --- past a search's end ---

    def past_deadline(self, key: str, owned: _Owned) -> None:
        """The owner's search stopped waiting: the work goes on to fill the cache, unless too much already does."""
        if len(self._background) < self.settings.think_max_background:
            self.finish_later(key, owned)
        else:
            # Bounded: under a flood of slow generations, new ones stop here instead of piling up.
            metrics.BACKGROUND_DROPPED.inc()
            self.in_flight.drop(key)

    def finish_later(self, key: str, owned: _Owned) -> None:
        async def finish() -> None:
            entry = None
            try:
                found = await owned.task
                entry = found.entry
                if entry is None and found.thoughts is not None:
                    texts = owned.profile.think_texts(owned.query, found.thoughts)
                    (vector,) = await self.vectors.fused([texts], found.embedded, (), [owned.profile.fuse_think])
                    entry = CachedQuery(found.thoughts, vector)
                    await self.cache.set_query(key, entry)
            except Exception:
                log.exception("finishing a query in the background failed")
            finally:
                self.in_flight.resolve(key, entry)

        background = asyncio.ensure_future(finish())
        self._background.add(background)
        background.add_done_callback(self._background.discard)
        self.in_flight.attach(key, background)


class Round:
    """One search's share of the thinking: the keys it owns, and the waits that end its think stage."""

    def __init__(self, thinking: Thinking, cold: list[Plan]) -> None:
        self._thinking = thinking
        self._cold = cold
        self._owned: dict[str, _Owned] = {}
        self._groups: dict[str, list[int]] = {}  # key -> indexes of `cold` (identical queries of this search)
        self._peers: dict[str, asyncio.Future[CachedQuery | None]] = {}
        for i, plan in enumerate(cold):
            assert plan.key is not None and plan.thought_key is not None
            self._groups.setdefault(plan.key, []).append(i)
        # Claimed now, not when awaited: an identical search arriving from here on coalesces with this one.
        for key, group in self._groups.items():
            future, own = thinking.in_flight.claim(key)
            if own:
                first = cold[group[0]]
                assert first.thought_key is not None
                query, profile = first.spec.query, first.profile
                task = asyncio.ensure_future(thinking.find(key, first.thought_key, query, profile))
                thinking.in_flight.attach(key, task)
                self._owned[key] = _Owned(task, query, profile, future)
            else:
                self._peers[key] = future

    def thought_free_texts(self) -> list[str]:
        """Texts of the think vectors this search makes that need no thoughts (HyDE: the query)."""
        return [t for owned in self._owned.values() for t in owned.profile.thought_free_texts(owned.query)]

    async def wait(self) -> list[Thought]:
        """One Thought per cold plan, in order, once every key has its thoughts or its reason."""
        waits = [
            self._own(key, group) if key in self._owned else self._peer(key, group)
            for key, group in self._groups.items()
        ]
        by_index: dict[int, Thought] = {}
        for group, found in zip(self._groups.values(), await asyncio.gather(*waits), strict=True):
            by_index.update(zip(group, found, strict=True))
        return [by_index[i] for i in range(len(self._cold))]

    async def publish(self, entries: dict[str, CachedQuery]) -> None:
        """The finished think vectors of the keys this search owns: cached first, then its waiters woken (a search
        arriving in between finds the vector in the cache)."""
        cache = self._thinking.cache
        await asyncio.gather(*(cache.set_query(key, entry) for key, entry in entries.items()))
        for key, entry in entries.items():
            self._thinking.in_flight.resolve(key, entry)

    def abandon(self) -> None:
        """This search stops early: finish its keys for whoever still waits (or the cache), else cancel."""
        in_flight = self._thinking.in_flight
        for key, owned in self._owned.items():
            if owned.future.done():
                continue
            if in_flight.waiters(key) == 0 and not owned.task.done():
                in_flight.drop(key)
            else:
                self._thinking.finish_later(key, owned)

    async def _own(self, key: str, group: list[int]) -> list[Thought]:
        owned = self._owned[key]
        states = ["miss"] + ["coalesced"] * (len(group) - 1)
        try:
            # shield: past the deadline the work goes on and fills the cache for the next identical query.
            found = await asyncio.wait_for(asyncio.shield(owned.task), min(self._cold[i].deadline_s for i in group))
        except TimeoutError:
            del self._owned[key]
            self._thinking.past_deadline(key, owned)
            return [Thought(state, reason="deadline") for state in states]
        if found.entry is not None:
            self._thinking.in_flight.resolve(key, found.entry)
            return [Thought("hit", cached=found.entry) for _ in group]
        if found.thoughts is None:
            self._thinking.in_flight.resolve(key, None)
            return [Thought(state, reason=found.reason or "thinker_error") for state in states]
        if found.cached:
            states[0] = "hit"
        return [
            Thought(state, thoughts=found.thoughts, embedded=found.embedded, owner=i == 0)
            for i, state in enumerate(states)
        ]

    async def _peer(self, key: str, group: list[int]) -> list[Thought]:
        future = self._peers[key]
        try:
            entry = await asyncio.wait_for(asyncio.shield(future), min(self._cold[i].deadline_s for i in group))
        except TimeoutError:
            return [Thought("coalesced", reason="deadline") for _ in group]
        finally:
            self._thinking.in_flight.leave(key, future)
        if entry is None:
            return [Thought("coalesced", reason="thinker_error") for _ in group]
        return [Thought("coalesced", cached=entry) for _ in group]
