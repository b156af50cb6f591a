"""The job table as the domain uses it: create, follow, move, cancel. The ingestion brokers implement it (with the
queue beside it: service/ingest/queue.py); warming keeps its jobs in it too."""

from __future__ import annotations

from typing import Any, Protocol

from service.jobs.model import Job


class JobStore(Protocol):
    async def create_job(self, collection: str, kind: str = "ingest") -> Job:
        """A new job; an ingest job is refused (QueueFull) while the queue is full, a warm job never is."""

    async def record(self, job_id: str, progress: dict[str, Any], status: str | None = None) -> Job:
        """A job's counts, and its status moved (only from queued or running: a cancel stands)."""

    async def fail(self, job_id: str, reason: str) -> None: ...

    async def get(self, job_id: str) -> Job:
        """Raises JobNotFound (service.model.errors)."""

    async def list(self, collection: str | None, limit: int) -> list[Job]: ...

    async def cancel(self, job_id: str) -> Job: ...
