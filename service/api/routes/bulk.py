"""Bulk upload: an NDJSON stream of documents becomes an ingestion job (202 once every valid line is queued)."""

from __future__ import annotations

from fastapi import APIRouter, Request

from service.api.auth import require
from service.api.deps import CollectionName, IngestionDep
from service.api.problems import Problem
from service.api.protocol import BulkAccepted

router = APIRouter(prefix="/v1/collections/{name}/documents", tags=["documents"])

NDJSON_TYPES = frozenset({"application/x-ndjson", "application/jsonl", "application/jsonlines"})
# Matched by the body size limit, which this route is exempt from (its body is streamed, never held).
BULK_PATH = r"^/v1/collections/[^/]+/documents/bulk/?$"


@router.post("/bulk", status_code=202, response_model=BulkAccepted, dependencies=[require("ingest")])
async def bulk_upload(name: CollectionName, request: Request, ingestion: IngestionDep) -> BulkAccepted:
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type not in NDJSON_TYPES:
        raise Problem(415, "A bulk upload is NDJSON: send Content-Type: application/x-ndjson, one document per line.")
    job = await ingestion.submit(name, request.stream())
    return BulkAccepted(job_id=job.job_id)
