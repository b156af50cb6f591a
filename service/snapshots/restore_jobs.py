"""Restore as a job: `POST /v1/collections/{name}/restore` verifies the snapshot and answers 202, the restore runs
on in the gateway that accepted it (`kind: "restore"`: bytes done of bytes to restore, the stage, the count at the
end), `GET /v1/jobs/{id}` on any replica follows it. The archive was verified before the job started, and the backend
writes aside and swaps in at the end, so a failed job leaves the store as it was."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path
from typing import Any

from service.jobs.model import Job
from service.jobs.store import JobStore
from service.jobs.tasks import JobTasks
from service.snapshots.library import SnapshotLibrary
from service.store.snapshot_format import Manifest

log = logging.getLogger(__name__)


class RestoreJobs:
    def __init__(self, library: SnapshotLibrary, jobs: JobStore) -> None:
        self.library = library
        self.jobs = jobs
        self.tasks = JobTasks(jobs)

    async def start(
        self, collection: str, archive: Path, manifest: Manifest, *, replace: bool, source: str, delete_after: bool
    ) -> Job:
        """`archive` verified (SnapshotLibrary.check); `delete_after`: an upload, deleted once the job ends."""
        job = await self.jobs.create_job(collection, kind="restore")
        state = {
            "stage": "queued",
            "bytes": manifest.data_bytes(),
            "done_bytes": 0,
            "snapshot": source,
            "snapshot_count": manifest.count,
            "replace": replace,
        }
        job = await self.jobs.record(job.job_id, state)
        work = self._run(job.job_id, collection, archive, manifest, replace, state, delete_after)
        self.tasks.spawn(work, f"restore-{job.job_id}")
        return job

    async def _run(
        self,
        job_id: str,
        collection: str,
        archive: Path,
        manifest: Manifest,
        replace: bool,
        state: dict[str, Any],
        delete_after: bool,
    ) -> None:
        def progress(stage: str, done: int) -> None:
            state["stage"] = stage
            state["done_bytes"] = min(done, state["bytes"])

        backend = self.library.require_backend()
        work = asyncio.ensure_future(backend.restore(collection, archive, manifest, replace=replace, progress=progress))
        try:
            # Not cancellable: a restore swaps the collection in at its end, all or nothing.
            count = await self.tasks.follow(job_id, work, state, cancellable=False)
            done = {**state, "stage": "done", "done_bytes": state["bytes"], "count": count}
            await self.jobs.record(job_id, done, "succeeded")
        except Exception as exc:  # the job says why; the store is as it was (see the backends)
            log.warning("restore job %s of %s failed: %r", job_id, collection, exc)
            with contextlib.suppress(Exception):
                await self.jobs.record(job_id, dict(state))
                await self.jobs.fail(job_id, f"restore failed: {exc}"[:500])
        finally:
            if delete_after:
                archive.unlink(missing_ok=True)

    async def aclose(self) -> None:
        await self.tasks.aclose()
