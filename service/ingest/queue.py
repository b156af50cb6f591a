"""The ingestion queue and job table behind one interface: Redis Streams (durable, shared by every replica and
worker) or in-process (one gateway, not durable).

Delivery is at least once: an entry is acknowledged only after the store confirmed its write, and entries a dead
worker held are delivered again. Writes are idempotent by document id, and a job's `processed` count only moves
for entries acknowledged for the first time, so results and counts come out exactly once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from service.jobs.store import JobStore


@dataclass(frozen=True)
class Entry:
    """One queued document: the raw JSON of a validated DocumentIn, and where it came from."""

    entry_id: str
    job_id: str
    collection: str
    line: int
    document: str
    deliveries: int = 1  # times handed to a worker (past MAX_DELIVERIES it goes to the dead-letter stream)


@dataclass(frozen=True)
class LineFailure:
    """A queued line that cannot be written (the document's own fault), with why: its job counts it as failed."""

    entry: Entry
    document_id: str | None
    reason: str


@dataclass(frozen=True)
class QueueStats:
    length: int  # entries not yet acknowledged
    oldest_pending_s: float  # age of the oldest of them (0 when empty)
    lag: int  # entries not yet delivered to any consumer


class Broker(JobStore, Protocol):
    """Queue and jobs. Gateways call the job side and `enqueue`; workers call `read`, `complete` and `drop`.
    Raises QueueFull (a new ingest job while the queue is full) and QueueUnavailable (service.model.errors)."""

    name: str
    durable: bool

    async def enqueue(self, job_id: str, collection: str, items: list[tuple[int, str]]) -> None:
        """Queues (line, document JSON) pairs durably and counts them as accepted, in one step."""

    async def seal(self, job_id: str, *, total: int, rejected: int, errors: list[dict]) -> None:
        """The upload ended: the final counts; a job with nothing left to do finishes here."""

    async def read(self, consumer: str, count: int, block_s: float) -> list[Entry]:
        """New entries, or entries another consumer left pending past the claim idle time."""

    async def complete(self, entries: list[Entry], truncated: dict[str, int]) -> None:
        """Acknowledges written entries; counts those acknowledged for the first time; finishes done jobs."""

    async def drop(self, entries: list[Entry]) -> None:
        """Acknowledges entries without writing them (their job was cancelled or failed)."""

    async def fail_lines(self, failures: list[LineFailure]) -> None:
        """Acknowledges entries that cannot be written, each counted as a failed line of its job, with its reason
        among the job's errors; the job goes on (and finishes once every other line is written)."""

    async def queued(self) -> int:
        """Entries not yet acknowledged (cheap: checked while an upload streams)."""

    async def stats(self) -> QueueStats: ...

    async def ping(self) -> None: ...

    async def aclose(self) -> None: ...
