"""In-process queue and job table, for a single gateway without Redis. Not durable: a restart loses queued
documents and job records (what was written to the store stays)."""

from __future__ import annotations

import asyncio
import collections
import itertools
import time
import uuid
from dataclasses import replace
from typing import Any

from service.ingest.queue import Entry, LineFailure, QueueStats
from service.jobs.model import ACTIVE, TERMINAL, Job
from service.model.errors import JobNotFound, QueueFull
from service.observability import metrics


class MemoryBroker:
    name = "memory"
    durable = False

    def __init__(
        self,
        *,
        queue_max: int,
        max_errors: int,
        max_jobs: int = 1000,
        claim_idle_s: float = 60.0,
        max_deliveries: int = 5,
    ) -> None:
        self._queue_max = queue_max
        self._jobs: collections.OrderedDict[str, Job] = collections.OrderedDict()
        self._queue: collections.deque[tuple[float, Entry]] = collections.deque()
        # Delivered, not yet acknowledged: when, and the entry (given again past the claim time, as Redis would).
        self._pending: dict[str, tuple[float, Entry]] = {}
        self._claim_idle_s = claim_idle_s
        self._max_deliveries = max_deliveries
        self.dead_letters: collections.deque[tuple[Entry, str]] = collections.deque(maxlen=1000)
        self._ready = asyncio.Event()
        self._ids = itertools.count()
        self._max_errors = max_errors
        self._max_jobs = max_jobs

    async def create_job(self, collection: str, kind: str = "ingest") -> Job:
        if kind == "ingest" and len(self._queue) + len(self._pending) >= self._queue_max:
            raise QueueFull
        job = Job(job_id=uuid.uuid4().hex, collection=collection, kind=kind)
        self._jobs[job.job_id] = job
        self._forget_finished()
        return job

    def _forget_finished(self) -> None:
        """Past `max_jobs` records, forget the oldest *finished* ones (their documents stay stored). A queued or
        running job is never forgotten, so a flood of new jobs cannot make anyone's job in progress a 404; if every
        record is in progress, the table holds more than `max_jobs` until they finish (each such ingest job holds
        queued documents, which INGEST_QUEUE_MAX bounds)."""
        excess = len(self._jobs) - self._max_jobs
        if excess <= 0:
            return
        finished = [job_id for job_id, job in self._jobs.items() if job.status in TERMINAL]
        for job_id in finished[:excess]:
            del self._jobs[job_id]

    async def enqueue(self, job_id: str, collection: str, items: list[tuple[int, str]]) -> None:
        now = time.time()
        for line, doc in items:
            self._queue.append((now, Entry(str(next(self._ids)), job_id, collection, line, doc)))
        job = await self.get(job_id)
        job.accepted += len(items)
        job.updated_at = now
        self._ready.set()

    async def seal(self, job_id: str, *, total: int, rejected: int, errors: list[dict]) -> None:
        job = await self.get(job_id)
        job.total, job.failed, job.errors, job.sealed = total, rejected, errors[: self._max_errors], True
        self._finish_if_done(job)

    async def fail(self, job_id: str, reason: str) -> None:
        job = await self.get(job_id)
        if job.status not in TERMINAL:
            job.status, job.error = "failed", reason
            job.finished_at = job.updated_at = time.time()

    async def record(self, job_id: str, progress: dict[str, Any], status: str | None = None) -> Job:
        job = await self.get(job_id)
        now = time.time()
        job.progress, job.updated_at = dict(progress), now
        if status is not None and job.status in ACTIVE:
            job.status = status
            if status == "running":
                job.started_at = job.started_at or now
            elif status in TERMINAL:
                job.finished_at = now
        return job

    async def get(self, job_id: str) -> Job:
        try:
            return self._jobs[job_id]
        except KeyError:
            raise JobNotFound(job_id) from None

    async def list(self, collection: str | None, limit: int) -> list[Job]:
        jobs = [j for j in reversed(self._jobs.values()) if collection is None or j.collection == collection]
        return jobs[:limit]

    async def cancel(self, job_id: str) -> Job:
        job = await self.get(job_id)
        if job.status not in TERMINAL:
            job.status = "cancelled"
            job.finished_at = job.updated_at = time.time()
        return job

    async def read(self, consumer: str, count: int, block_s: float) -> list[Entry]:
        await self._redeliver()
        if not self._queue:
            self._ready.clear()
            try:
                await asyncio.wait_for(self._ready.wait(), block_s)
            except TimeoutError:
                return []
        entries = []
        while self._queue and len(entries) < count:
            _, entry = self._queue.popleft()
            entries.append(entry)
            self._pending[entry.entry_id] = (time.time(), entry)
        now = time.time()
        for job_id in {e.job_id for e in entries}:
            job = self._jobs.get(job_id)
            if job is not None and job.status == "queued":
                job.status, job.started_at, job.updated_at = "running", now, now
        return entries

    async def complete(self, entries: list[Entry], truncated: dict[str, int]) -> None:
        counts = collections.Counter(e.job_id for e in entries if self._pending.pop(e.entry_id, None) is not None)
        for job_id, n in counts.items():
            job = self._jobs.get(job_id)
            if job is None:
                continue
            job.processed += n
            job.truncated += truncated.get(job_id, 0)
            job.updated_at = time.time()
            self._finish_if_done(job)

    async def drop(self, entries: list[Entry]) -> None:
        for e in entries:
            self._pending.pop(e.entry_id, None)

    async def fail_lines(self, failures: list[LineFailure]) -> None:
        for f in failures:
            if self._pending.pop(f.entry.entry_id, None) is None:
                continue  # acknowledged already
            job = self._jobs.get(f.entry.job_id)
            if job is None:
                continue
            job.write_failed += 1
            if len(job.write_errors) < self._max_errors:
                job.write_errors.append({"line": f.entry.line, "id": f.document_id, "error": f.reason})
            job.updated_at = time.time()
            self._finish_if_done(job)

    async def _redeliver(self) -> None:
        """Entries a worker took and never acknowledged (a stage that died with them) are given again past the
        claim time; past `max_deliveries` they are dead-lettered, as failed lines of their jobs."""
        now = time.time()
        stale = [entry for at, entry in self._pending.values() if now - at >= self._claim_idle_s]
        dead = []
        for entry in stale:
            again = replace(entry, deliveries=entry.deliveries + 1)
            if again.deliveries > self._max_deliveries:
                dead.append(again)
                continue
            del self._pending[entry.entry_id]
            self._queue.appendleft((now, again))
        if dead:
            reason = f"delivered {self._max_deliveries}+ times without being written"
            self.dead_letters.extend((e, reason) for e in dead)
            metrics.INGEST_DOCUMENTS.labels("dead_lettered").inc(len(dead))
            await self.fail_lines([LineFailure(e, None, f"dead-lettered: {reason}") for e in dead])

    async def queued(self) -> int:
        return len(self._queue) + len(self._pending)

    def _finish_if_done(self, job: Job) -> None:
        if job.status in ACTIVE and job.done:
            job.status = "succeeded"
            job.finished_at = job.updated_at = time.time()
            job.started_at = job.started_at or job.finished_at

    async def stats(self) -> QueueStats:
        now = time.time()
        pending = [at for at, _ in self._pending.values()]
        oldest = min([t for t, _ in itertools.islice(self._queue, 1)] + pending, default=now)
        length = len(self._queue) + len(self._pending)
        return QueueStats(length=length, oldest_pending_s=now - oldest, lag=len(self._queue))

    async def ping(self) -> None:
        return None

    async def aclose(self) -> None:
        return None
