"""Ingestion jobs: status, recent jobs of a collection, cancel."""

from __future__ import annotations

from fastapi import APIRouter, Query

from service.api.auth import require
from service.api.deps import IngestionDep
from service.api.protocol import JobLineError, JobList, JobOut, WarmProgress
from service.ingest.broker import Job, iso

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])


def job_out(job: Job) -> JobOut:
    warm = _warm_progress(job) if job.kind == "warm" else None
    return JobOut(
        job_id=job.job_id,
        collection=job.collection,
        status=job.status,  # type: ignore[arg-type]
        # A warm job's queries in the ingest fields too: queries read, queries finished, queries failed.
        total=warm.queries if warm else job.total,
        accepted=warm.queries if warm else job.accepted,
        processed=warm.done if warm else job.processed,
        failed=warm.failed if warm else job.failed,
        truncated=job.truncated,
        errors=[JobLineError(**e) for e in job.errors],
        error=job.error,
        created_at=iso(job.created_at) or "",
        updated_at=iso(job.updated_at) or "",
        started_at=iso(job.started_at),
        finished_at=iso(job.finished_at),
        documents_per_second=job.documents_per_second(),
        kind=job.kind,  # type: ignore[arg-type]
        warm=warm,
    )


def _warm_progress(job: Job) -> WarmProgress:
    p = {k: job.progress.get(k, 0) for k in ("queries", "done", "skipped", "warmed", "failed", "worker_requests")}
    rate = None
    if job.started_at is not None and p["done"]:
        rate = p["done"] / max((job.finished_at or job.updated_at) - job.started_at, 1e-3)
    return WarmProgress(**p, queries_per_second=rate)


@router.get("", response_model=JobList, dependencies=[require("ingest")])
async def list_jobs(
    ingestion: IngestionDep, collection: str | None = None, limit: int = Query(default=50, ge=1, le=1000)
) -> JobList:
    return JobList(jobs=[job_out(j) for j in await ingestion.broker.list(collection, limit)])


@router.get("/{job_id}", response_model=JobOut, dependencies=[require("ingest")])
async def get_job(job_id: str, ingestion: IngestionDep) -> JobOut:
    return job_out(await ingestion.broker.get(job_id))


@router.delete("/{job_id}", status_code=202, response_model=JobOut, dependencies=[require("ingest")])
async def cancel_job(job_id: str, ingestion: IngestionDep) -> JobOut:
    return job_out(await ingestion.broker.cancel(job_id))
