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


class StoreRejected(Exception):
    """The store refused a request because of what it carried (a payload it cannot store, a filter it cannot
    read): the caller's fault, answered 422, never counted against the store's health, and for a bulk line, that
    line's error."""


class PolicyRejected(Exception):
    """A think policy that cannot apply to its collection: 422."""


class JobNotFound(Exception):
    pass


class QueueFull(Exception):
    """More documents are queued than INGEST_QUEUE_MAX: a new job answers 429; an upload that fills the queue while
    it streams is cut there (`job_id`, `line`: its job failed, nothing more of it is written)."""

    def __init__(self, job_id: str | None = None, line: int | None = None) -> None:
        super().__init__(job_id or "")
        self.job_id = job_id
        self.line = line


class UploadTooLarge(Exception):
    """A bulk upload passed MAX_UPLOAD_BYTES: it is cut there (413), its job failed."""

    def __init__(self, job_id: str, limit: int, line: int | None = None) -> None:
        super().__init__(job_id)
        self.job_id = job_id
        self.limit = limit
        self.line = line


class KeysUnavailable(Exception):
    """Keys cannot be managed at run time here (no Redis, or an open service): 409 with why."""


class KeyStoreUnavailable(DependencyUnavailable):
    """Redis failed while keys were created, listed or revoked: 503, retry."""

    dependency = "the key table"


class AliasConflict(Exception):
    """An alias that would shadow a collection, point to an alias, or a collection dropped under its aliases: 409."""
