"""Between the HTTP schemas (protocol.py) and the domain's types: the routes convert at the edge, so nothing below
the API knows its schemas."""

from __future__ import annotations

from typing import Any

from service.api.protocol import (
    ChunkingConfig,
    DocumentOut,
    JobLineError,
    JobOut,
    SearchHit,
    SearchRequest,
    SearchResponse,
    ThinkPolicyIn,
    WarmProgress,
)
from service.jobs.model import Job, iso
from service.model.collections import ChunkingParams, CollectionInfo, HnswParams
from service.model.documents import StoredDocument
from service.model.policy import FusionChoice, ThinkPolicy
from service.model.search import SearchOutcome, SearchSpec


def search_spec(request: SearchRequest) -> SearchSpec:
    return SearchSpec(
        query=request.query,
        top_k=request.top_k,
        filter=request.filter,
        think=request.think,
        include_thoughts=request.include_thoughts,
        deadline_ms=request.deadline_ms,
        hnsw_ef=request.hnsw_ef,
        retrieval=request.retrieval,
        fusion=FusionChoice(f.method, f.query_weight, f.think_weight) if (f := request.fusion) else None,
    )


def think_policy(body: ThinkPolicyIn) -> ThinkPolicy:
    return ThinkPolicy(**body.model_dump())


def policy_changes(body: ThinkPolicyIn) -> dict[str, Any]:
    """Only the fields the client sent (an explicit null resets that field)."""
    return body.model_dump(exclude_unset=True)


def to_response(outcome: SearchOutcome) -> SearchResponse:
    return SearchResponse(
        results=[
            SearchHit(
                id=h.document.id,
                score=h.score,
                title=h.document.title,
                text=h.document.text,
                metadata=h.document.metadata,
            )
            for h in outcome.hits
        ],
        mode=outcome.mode,  # type: ignore[arg-type]
        thought_cache=outcome.thought_cache,  # type: ignore[arg-type]
        degraded=outcome.degraded,
        thoughts=outcome.thoughts,
        timings_ms=outcome.timings_ms,
        retrieval=outcome.retrieval,  # type: ignore[arg-type]
    )


def document_out(doc: StoredDocument) -> DocumentOut:
    return DocumentOut(id=doc.id, text=doc.text, title=doc.title, metadata=doc.metadata)


def hnsw_params(m: int, ef_construct: int) -> HnswParams:
    return HnswParams(m=m, ef_construct=ef_construct)


def chunking_params(config: ChunkingConfig | None) -> ChunkingParams | None:
    return ChunkingParams(config.max_tokens, config.overlap) if config else None


def described(info: CollectionInfo) -> dict[str, Any]:
    """The fields a created collection and a described one share."""
    return {
        "name": info.name,
        "dimension": info.dimension,
        "distance": info.distance,
        "embedder": info.embedder,
        "sparse": info.sparse,
        "chunking": ChunkingConfig(**info.chunking.as_meta()) if info.chunking else None,
    }


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
        failed=warm.failed if warm else job.failed + job.write_failed,
        truncated=job.truncated,
        errors=[JobLineError(**e) for e in sorted(job.errors + job.write_errors, key=lambda e: e["line"])],
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
