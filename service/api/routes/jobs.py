"""Ingestion jobs: status, recent jobs of a collection, cancel."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query

from service.api.auth import refuse, require
from service.api.deps import IngestionDep, PrincipalDep
from service.api.mappers import job_out
from service.api.protocol import JobList, JobOut
from service.jobs.model import Job
from service.model.errors import JobNotFound

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])


@router.get("", response_model=JobList, dependencies=[require("ingest")])
async def list_jobs(
    ingestion: IngestionDep,
    principal: PrincipalDep,
    collection: str | None = None,
    limit: int = Query(default=50, ge=1, le=1000),
) -> JobList:
    if collection is not None and not principal.reaches(collection):
        raise refuse(403, "collection", "This key may not reach this collection.", principal)
    jobs = await ingestion.broker.list(collection, limit if principal.unrestricted else 1000)
    return JobList(jobs=[job_out(j) for j in jobs if principal.reaches(j.collection)][:limit])


async def _visible(job_id: str, ingestion: IngestionDep, principal: PrincipalDep) -> Job:
    """A job of a collection the key may not reach is, to that key, no job at all (the same 404 as an unknown id)."""
    job = await ingestion.broker.get(job_id)
    if not principal.reaches(job.collection):
        raise JobNotFound(job_id)
    return job


@router.get("/{job_id}", response_model=JobOut, dependencies=[require("ingest")])
async def get_job(job: Annotated[Job, Depends(_visible)]) -> JobOut:
    return job_out(job)


@router.delete("/{job_id}", status_code=202, response_model=JobOut, dependencies=[require("ingest")])
async def cancel_job(job: Annotated[Job, Depends(_visible)], ingestion: IngestionDep) -> JobOut:
    return job_out(await ingestion.broker.cancel(job.job_id))
