"""Ingestion jobs: status, recent jobs of a collection, cancel."""

from __future__ import annotations

from fastapi import APIRouter, Query

from service.api.auth import require
from service.api.deps import IngestionDep
from service.api.mappers import job_out
from service.api.protocol import JobList, JobOut

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])


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
