"""The ingestion queue and job table behind one interface: Redis Streams (durable, shared by every replica and
worker) or in-process (one gateway, not durable).

Delivery is at least once: an entry is acknowledged only after the store confirmed its write, and entries a dead
worker held are delivered again. Writes are idempotent by document id, and a job's `processed` count only moves
for entries acknowledged for the first time, so results and counts come out exactly once.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

TERMINAL = frozenset({"succeeded", "failed", "cancelled"})


class QueueFull(Exception):
    """More documents are queued than INGEST_QUEUE_MAX: a new job answers 429."""


class QueueUnavailable(Exception):
    """The queue (Redis) cannot be reached: answer 503."""


class JobNotFound(Exception):
    pass


@dataclass(frozen=True)
class Entry:
    """One queued document: the raw JSON of a validated DocumentIn, and where it came from."""

    entry_id: str
    job_id: str
    collection: str
    line: int
    document: str


@dataclass(frozen=True)
class QueueStats:
    length: int  # entries not yet acknowledged
    oldest_pending_s: float  # age of the oldest of them (0 when empty)
    lag: int  # entries not yet delivered to any consumer


@dataclass
class Job:
    job_id: str
    collection: str
    status: str = "queued"
    total: int = 0
    accepted: int = 0
    processed: int = 0
    failed: int = 0
    truncated: int = 0
    sealed: bool = False  # the upload is complete: `accepted` is final
    errors: list[dict] = field(default_factory=list)
    error: str | None = None
    created_at: float = field(default_factory=time.time)
    updated_at: float = field(default_factory=time.time)
    started_at: float | None = None
    finished_at: float | None = None
    kind: str = "ingest"  # or "warm": a query log warmed by service/search/warming.py (no queue entries)
    progress: dict[str, int] = field(default_factory=dict)  # a warm job's counts (queries done, skipped, ...)

    def documents_per_second(self) -> float | None:
        if self.started_at is None or self.processed == 0:
            return None
        end = self.finished_at or self.updated_at
        return self.processed / max(end - self.started_at, 1e-3)


def iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")


class Broker(Protocol):
    """Queue and jobs. Gateways call the job side and `enqueue`; workers call `read`, `complete` and `drop`."""

    name: str
    durable: bool

    async def create_job(self, collection: str, kind: str = "ingest") -> Job:
        """A new job; an ingest job is refused (QueueFull) while the queue is full, a warm job never is."""

    async def record(self, job_id: str, progress: dict[str, int], status: str | None = None) -> Job:
        """A warm job's counts, and its status moved (only from queued or running: a cancel stands)."""

    async def enqueue(self, job_id: str, collection: str, items: list[tuple[int, str]]) -> None:
        """Queues (line, document JSON) pairs durably and counts them as accepted, in one step."""

    async def seal(self, job_id: str, *, total: int, rejected: int, errors: list[dict]) -> None:
        """The upload ended: the final counts; a job with nothing left to do finishes here."""

    async def fail(self, job_id: str, reason: str) -> None: ...

    async def get(self, job_id: str) -> Job: ...

    async def list(self, collection: str | None, limit: int) -> list[Job]: ...

    async def cancel(self, job_id: str) -> Job: ...

    async def read(self, consumer: str, count: int, block_s: float) -> list[Entry]:
        """New entries, or entries another consumer left pending past the claim idle time."""

    async def complete(self, entries: list[Entry], truncated: dict[str, int]) -> None:
        """Acknowledges written entries; counts those acknowledged for the first time; finishes done jobs."""

    async def drop(self, entries: list[Entry]) -> None:
        """Acknowledges entries without writing them (their job was cancelled or failed)."""

    async def stats(self) -> QueueStats: ...

    async def ping(self) -> None: ...

    async def aclose(self) -> None: ...
