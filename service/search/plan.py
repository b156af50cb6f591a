"""Step 1: plan each query — its mode, its deadline, its cache keys, and its think vector if already cached."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, replace

from service.clients.embedder import Embedder
from service.clients.thinker import ThinkerClient, ThinkerError
from service.documents.policies import Policies
from service.model.policy import DEFAULT_THINK_WEIGHT, ThinkPolicy
from service.model.profiles import ThinkProfile
from service.model.search import SearchSpec
from service.observability import metrics
from service.redis.cache import CachedQuery, ThoughtCache
from service.settings import Settings


@dataclass(frozen=True)
class Plan:
    """What one query will do. `key` set: it searches in think mode if thinking succeeds; `cached` set: its think
    vector is already in the cache; neither: direct mode (`reason` says why, when thinking was asked for)."""

    spec: SearchSpec
    profile: ThinkProfile  # the collection's policy's (or the search's own fusion's)
    deadline_s: float
    direct_texts: tuple[str, ...]
    key: str | None = None  # the finished think vector's cache key
    thought_key: str | None = None  # the thoughts' cache key (a cold key only)
    cached: CachedQuery | None = None
    reason: str | None = None  # thinker_not_configured, thinker_error
    think_weight: float | None = None  # rank fusion: the think list's weight (None: vector fusion)

    @property
    def cold(self) -> bool:
        """Needs thinking now."""
        return self.key is not None and self.cached is None

    def direct(self) -> Plan:
        """The same query in direct mode (a stream's first phase)."""
        return replace(self, key=None, thought_key=None, cached=None, reason=None)


class Planner:
    def __init__(
        self,
        settings: Settings,
        policies: Policies,
        thinker: ThinkerClient | None,
        cache: ThoughtCache,
        embedder: Embedder,
    ) -> None:
        self.settings = settings
        self.policies = policies
        self.thinker = thinker
        self.cache = cache
        self.embedder = embedder

    async def plan(self, collection: str, specs: list[SearchSpec], deadline_s: float | None = None) -> list[Plan]:
        """Raises CollectionNotFound for an unknown collection (its policy is read first)."""
        policy = await self.policies.get(collection)
        modes = [self._mode(s, policy, deadline_s) for s in specs]
        plans = [plan for plan, _ in modes]
        thinking = [i for i, (_, wants) in enumerate(modes) if wants]
        if not thinking:
            return plans
        model = await self._thinker_model(min(plans[i].deadline_s for i in thinking))
        if model is None:
            for i in thinking:
                plans[i] = replace(plans[i], key=None, reason="thinker_error")
            return plans
        for i in thinking:
            plan = plans[i]
            plans[i] = replace(plan, key=plan.profile.vector_key(plan.spec.query, model, self.embedder.name))
        found = await self._lookup(list(dict.fromkeys(plans[i].key for i in thinking)))
        for i in thinking:
            plan = plans[i]
            if found.get(plan.key) is not None:
                plans[i] = replace(plan, cached=found[plan.key])
            else:
                plans[i] = replace(plan, thought_key=plan.profile.cache_key(plan.spec.query, model))
        return plans

    def _mode(self, spec: SearchSpec, policy: ThinkPolicy, deadline_s: float | None) -> tuple[Plan, bool]:
        """The query's direct plan, and whether it is to think (asked for, or its collection's default, or the
        service's, with a worker)."""
        if spec.policy:
            policy = policy.updated(dict(spec.policy))
        fusion = spec.fusion
        if fusion is not None:  # the search's own fusion, for experiments: it may change the think vector
            policy = policy.updated(
                {"fusion": fusion.fusion, "query_weight": fusion.query_weight, "think_weight": fusion.think_weight}
            )
        profile = self.policies.profile(policy)
        plan = Plan(
            spec,
            profile,
            deadline_s or (spec.deadline_ms or self.settings.search_deadline_ms) / 1000,
            tuple(profile.query_texts(spec.query, None)),
            think_weight=_think_weight(policy) if policy.rank else None,
        )
        default = self.settings.think_default if policy.enabled is None else policy.enabled
        wants = default if spec.think is None else spec.think
        if self.thinker is None:
            # Without a thinker, an omitted `think` is plain direct mode; only an explicit true is degraded.
            return (replace(plan, reason="thinker_not_configured") if spec.think else plan), False
        return plan, bool(wants)

    async def _lookup(self, keys: list[str]) -> dict[str, CachedQuery | None]:
        if len(keys) == 1:  # the common single search: no gather machinery
            return {keys[0]: await self.cache.get_query(keys[0])}
        return dict(zip(keys, await asyncio.gather(*(self.cache.get_query(k) for k in keys)), strict=True))

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


def _think_weight(policy: ThinkPolicy) -> float:
    return DEFAULT_THINK_WEIGHT if policy.think_weight is None else policy.think_weight
