"""Tuning as a job: `POST /v1/collections/{name}/tune` starts it, `GET /v1/jobs/{id}` on any replica follows it
(`kind: "tune"`: searches done of searches needed, the stage, then the table), `DELETE` cancels it. The job runs
in the gateway that accepted it, on that replica's pipeline."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from service.jobs.model import Job
from service.jobs.store import JobStore
from service.jobs.tasks import JobTasks
from service.search.tuning import FusionConfig, GenerationConfig, TuneFailed, Tuner, searches_needed

log = logging.getLogger(__name__)


class TuneJobs:
    def __init__(self, tuner: Tuner, jobs: JobStore) -> None:
        self.tuner = tuner
        self.jobs = jobs
        self.tasks = JobTasks(jobs)

    async def start(
        self,
        collection: str,
        queries: Mapping[str, str],
        qrels: Mapping[str, Mapping[str, int]],
        generations: Sequence[GenerationConfig],
        fusions: Sequence[FusionConfig],
        **options: Any,
    ) -> Job:
        """The job is recorded before this returns (the 202); the searches run on in this process."""
        job = await self.jobs.create_job(collection, kind="tune")
        total = searches_needed(len(queries), len(generations), len(fusions))
        job = await self.jobs.record(job.job_id, {"searches": total, "done": 0, "stage": "queued"})
        work = self._run(job.job_id, collection, total, queries, qrels, generations, fusions, options)
        self.tasks.spawn(work, f"tune-{job.job_id}")
        return job

    async def _run(
        self,
        job_id: str,
        collection: str,
        total: int,
        queries: Mapping[str, str],
        qrels: Mapping[str, Mapping[str, int]],
        generations: Sequence[GenerationConfig],
        fusions: Sequence[FusionConfig],
        options: dict[str, Any],
    ) -> None:
        state: dict[str, Any] = {"searches": total, "done": 0, "stage": "direct"}

        def on_search(stage: str) -> None:
            state["done"] += 1
            state["stage"] = stage

        work = asyncio.ensure_future(
            self.tuner.run(collection, queries, qrels, generations, fusions, on_search=on_search, **options)
        )
        try:
            result = await self.tasks.follow(job_id, work, state)
            if result is not None:  # None: cancelled, nothing written
                await self.jobs.record(job_id, {**state, "stage": "done", "result": result.public()}, "succeeded")
        except Exception as exc:  # TuneFailed, a store or worker failure: the job says so, the gateway goes on
            if not isinstance(exc, TuneFailed):
                log.exception("tuning job %s failed", job_id)
            with contextlib.suppress(Exception):
                await self.jobs.record(job_id, dict(state))
                await self.jobs.fail(job_id, f"tuning failed: {exc}"[:500])

    async def aclose(self) -> None:
        await self.tasks.aclose()
