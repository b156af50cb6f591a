"""The service's own errors, below every layer that raises or maps them.

`DependencyUnavailable` is the one base of "a system we depend on is down or failing": the API answers 503 with
Retry-After for every subclass, workers retry them, and breakers count them. Everything else here is the caller's
or the data's problem (a 4xx).
"""

from __future__ import annotations


class DependencyUnavailable(Exception):
    """A dependency (store, embedder, queue, worker) cannot serve now: retry later. `dependency` names it."""

    dependency = "a dependency"


class StoreUnavailable(DependencyUnavailable):
    """Qdrant is unreachable or failing: answer 503."""

    dependency = "the vector store"


class EmbedderError(DependencyUnavailable):
    """The embedder is unreachable or failed: searches and ingests answer 503. `status`: the server's HTTP status."""

    dependency = "the embedder"

    def __init__(self, detail: str, status: int | None = None) -> None:
        super().__init__(detail)
        self.status = status


class QueueUnavailable(DependencyUnavailable):
    """The ingestion queue (Redis) cannot be reached: answer 503."""

    dependency = "the ingestion queue"


class CollectionNotFound(Exception):
    pass


class CollectionExists(Exception):
    pass


class VectorMismatch(Exception):
    """The vector does not fit the collection (it was built with another embedder)."""


class JobNotFound(Exception):
    pass


class QueueFull(Exception):
    """More documents are queued than INGEST_QUEUE_MAX: a new job answers 429."""
