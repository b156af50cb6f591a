"""Step 3: query texts become one fused vector per query.

Texts of direct mode (the query itself, in the profile's format) are kept in a bounded in-process cache, so a
repeated direct search, or the query's own text inside a think vector, is embedded once. Everything not embedded
yet goes to the embedder in one call.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

import numpy as np
from cachetools import LRUCache

from service.clients.embedder import Embedder
from service.observability import metrics
from service.settings import Settings

log = logging.getLogger(__name__)
Vectors = dict[str, np.ndarray]


class QueryVectors:
    def __init__(self, settings: Settings, embedder: Embedder) -> None:
        self.embedder = embedder
        size = settings.query_vector_cache_size
        self._texts: LRUCache[str, np.ndarray] | None = LRUCache(maxsize=size) if size else None

    def remembered(self, text: str) -> bool:
        return self._texts is not None and text in self._texts

    def known(self, texts: Iterable[str]) -> Vectors:
        """The cached vectors of those texts that have one."""
        if self._texts is None:
            return {}
        known = {}
        for t in texts:
            vector = self._texts.get(t)
            if vector is not None:
                known[t] = vector
        metrics.QUERY_VECTOR_CACHE.labels("hit").inc(len(known))
        return known

    async def embed(self, texts: list[str]) -> np.ndarray:
        metrics.QUERY_EMBED_CALLS.labels("search").inc()
        metrics.QUERY_TEXTS_EMBEDDED.inc(len(texts))
        return await self.embedder.embed(texts)

    async def ahead(self, texts: list[str]) -> Vectors:
        """Texts embedded ahead of need (a think vector's thought-free texts, while the worker generates, on the core
        it leaves free). A failure is only logged: the texts are embedded again, and fail cleanly, with the rest."""
        texts = list(dict.fromkeys(texts))
        known = self.known(texts)
        missing = [t for t in texts if t not in known]
        if not missing:
            return known
        try:
            fresh = dict(zip(missing, await self.embed(missing), strict=True))
        except Exception as exc:
            log.warning("embedding the queries ahead of their thoughts failed: %r", exc)
            return known
        self._remember(fresh, fresh)
        return {**known, **fresh}

    async def fused(
        self,
        texts_per_query: list[list[str]],
        ready: Vectors,
        cacheable: Iterable[str],
        fuses: list[Callable[[np.ndarray], np.ndarray]],
    ) -> list[np.ndarray]:
        """One vector per list of texts, fused by its own function. `ready`: texts embedded already; `cacheable`:
        the direct-mode texts among them, kept for next time."""
        wanted = [t for texts in texts_per_query for t in texts]
        known = self.known(t for t in wanted if t not in ready)
        known.update(ready)
        missing = list(dict.fromkeys(t for t in wanted if t not in known))
        if missing:
            fresh = dict(zip(missing, await self.embed(missing), strict=True))
            known.update(fresh)
            self._remember(fresh, cacheable)
        return [fuse(np.stack([known[t] for t in texts])) for texts, fuse in zip(texts_per_query, fuses, strict=True)]

    def _remember(self, fresh: Vectors, texts: Iterable[str]) -> None:
        if self._texts is not None:
            for t in texts:
                if t in fresh:
                    self._texts[t] = fresh[t]
