"""The jobs a gateway runs itself (tuning, restores): their tasks, and the loop that keeps their progress in the job
table while they run, so `GET /v1/jobs/{id}` on any replica follows them."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine
from typing import Any, TypeVar

from service.jobs.store import JobStore

T = TypeVar("T")
REPORT_INTERVAL_S = 0.5  # how often progress is written (and a cancel noticed)


class JobTasks:
    def __init__(self, jobs: JobStore) -> None:
        self.jobs = jobs
        self._running: set[asyncio.Task[None]] = set()

    def spawn(self, work: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.create_task(work, name=name)
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def follow(
        self, job_id: str, work: asyncio.Future[T], state: dict[str, Any], *, cancellable: bool = True
    ) -> T | None:
        """Marks the job running and writes `state` to it while `work` runs. Returns what `work` returned, or None
        when the job was cancelled meanwhile (`DELETE /v1/jobs/{id}` on any replica: `work` is cancelled too).
        Raises what `work` raised; cancelled itself, it cancels `work`."""
        try:
            await self.jobs.record(job_id, dict(state), "running")
            while not work.done():
                await asyncio.wait({work}, timeout=REPORT_INTERVAL_S)
                if work.done():
                    break
                job = await self.jobs.record(job_id, dict(state))
                if cancellable and job.status == "cancelled":
                    work.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await work
                    return None
            return work.result()
        except BaseException:
            work.cancel()
            raise

    async def aclose(self) -> None:
        for task in list(self._running):
            task.cancel()
        await asyncio.gather(*self._running, return_exceptions=True)
