"""Warming as a job: a query log thought, embedded and cached in the background, its progress kept in the ingest
job store (`kind: "warm"`), so `GET /v1/jobs/{id}` on any replica reads it and `DELETE` cancels it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from dataclasses import asdict

from service.jobs.model import Job
from service.jobs.store import JobStore
from service.model.search import WarmSummary
from service.search.pipeline import SearchPipeline

log = logging.getLogger(__name__)
# How often the counts are written to the job store (and a cancel is noticed).
REPORT_INTERVAL_S = 0.5


def progress(counts: Counter[str], queries: int) -> dict[str, int]:
    """A warm job's counts, as the job store keeps them (the same arithmetic as the pipeline's summary)."""
    return asdict(WarmSummary.of(counts, queries))


class Warming:
    def __init__(self, pipeline: SearchPipeline, jobs: JobStore, concurrency: int) -> None:
        self.pipeline = pipeline
        self.jobs = jobs
        self.concurrency = concurrency
        self._running: set[asyncio.Task[None]] = set()

    async def start(self, collection: str, queries: list[str]) -> Job:
        """The job is recorded before this returns (the 202); the work runs on in this process."""
        job = await self.jobs.create_job(collection, kind="warm")
        job = await self.jobs.record(job.job_id, progress(Counter(), len(queries)))
        task = asyncio.create_task(self._run(job.job_id, collection, queries), name=f"warm-{job.job_id}")
        self._running.add(task)
        task.add_done_callback(self._running.discard)
        return job

    async def _run(self, job_id: str, collection: str, queries: list[str]) -> None:
        counts: Counter[str] = Counter()
        def on_query(outcome: str) -> None:
            counts[outcome] += 1

        work = asyncio.ensure_future(self.pipeline.warm(collection, queries, self.concurrency, on_query))
        try:
            await self.jobs.record(job_id, progress(counts, len(queries)), "running")
            while not work.done():
                await asyncio.wait({work}, timeout=REPORT_INTERVAL_S)
                job = await self.jobs.record(job_id, progress(counts, len(queries)))
                if job.status == "cancelled":  # DELETE /v1/jobs/{id}, from any replica
                    work.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await work
                    return
            summary = work.result()
            if summary.failed and summary.failed == summary.queries:
                await self.jobs.record(job_id, progress(counts, len(queries)))
                await self.jobs.fail(job_id, "The thought worker is unavailable: every query failed.")
            else:
                await self.jobs.record(job_id, progress(counts, len(queries)), "succeeded")
        except asyncio.CancelledError:
            work.cancel()
            raise
        except Exception as exc:  # a failing embedder or job store: the job says so, the gateway goes on
            work.cancel()
            log.exception("warming job %s failed", job_id)
            with contextlib.suppress(Exception):
                await self.jobs.fail(job_id, f"warming failed: {exc!r}"[:300])

    async def aclose(self) -> None:
        for task in list(self._running):
            task.cancel()
        await asyncio.gather(*self._running, return_exceptions=True)
