"""Each collection's think policy, and the profile it makes, as searches read them.

A policy is read from the store at most once a second per collection and process, so a PATCH on one replica is
seen by every replica within a second, and a search costs no store round trip for it.
"""

from __future__ import annotations

import time
from dataclasses import asdict

from service.model.policy import ThinkPolicy
from service.model.profiles import ThinkProfile, make_profile
from service.settings import Settings
from service.store.base import Store

TTL_S = 1.0


class Policies:
    def __init__(self, settings: Settings, store: Store) -> None:
        self.settings = settings
        self.store = store
        self._read: dict[str, tuple[float, ThinkPolicy]] = {}
        self._profiles: dict[ThinkPolicy, ThinkProfile] = {}

    async def get(self, collection: str) -> ThinkPolicy:
        """Raises CollectionNotFound for an unknown collection."""
        hit = self._read.get(collection)
        now = time.monotonic()
        if hit is not None and now - hit[0] < TTL_S:
            return hit[1]
        policy = ThinkPolicy.from_meta(await self.store.policy(collection))
        self._read[collection] = (now, policy)
        return policy

    def profile(self, policy: ThinkPolicy) -> ThinkProfile:
        """One profile object per distinct policy (its cache-key material is computed once)."""
        profile = self._profiles.get(policy)
        if profile is None:
            if len(self._profiles) > 1024:  # policies are few; bounded all the same
                self._profiles.clear()
            profile = self._profiles[policy] = make_profile(self.settings, policy)
        return profile

    async def set(self, collection: str, policy: ThinkPolicy) -> None:
        await self.store.set_policy(collection, policy.as_meta())
        self._read.pop(collection, None)

    def effective(self, policy: ThinkPolicy) -> dict[str, object]:
        """The policy with the service's defaults filled in: what a search of the collection does."""
        profile = self.profile(policy)
        return {
            **asdict(policy),
            "enabled": self.settings.think_default if policy.enabled is None else policy.enabled,
            "profile": profile.name,
            "prompt": profile.prompt,
            "n": profile.sampling.n,
            "max_tokens": profile.sampling.max_tokens,
            "temperature": profile.sampling.temperature,
            "fusion": policy.fusion or "vector",
            "sparse_query_repeats": profile.sparse_repeats,
        }
