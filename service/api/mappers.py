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
    TuneGrid,
    TuneProgress,
    TuneResultOut,
    WarmProgress,
)
from service.api.protocol_access import KeyOut
from service.api.protocol_snapshots import RestoreProgress
from service.jobs.model import Job, iso
from service.model.collections import ChunkingParams, CollectionInfo, HnswParams
from service.model.documents import StoredDocument
from service.model.keys import KeyGrant
from service.model.policy import FusionChoice, ThinkPolicy
from service.model.search import SearchOutcome, SearchSpec
from service.search.tuning import FusionConfig, GenerationConfig, parse_grid
from service.settings import RateLimit


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
    tune = _tune_progress(job) if job.kind == "tune" else None
    if job.kind == "restore":
        return _restore_job(job)
    if tune is not None:  # a tune job's searches in the ingest fields: needed, needed, done
        return _work_job(job, tune.searches, tune.done, tune=tune)
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


def _restore_job(job: Job) -> JobOut:
    """A restore job: its documents in the ingest fields (in the snapshot, in the snapshot, restored), bytes in
    `restore`."""
    p = job.progress
    restore = RestoreProgress(
        stage=str(p.get("stage", "queued")),
        bytes=int(p.get("bytes", 0)),
        done_bytes=int(p.get("done_bytes", 0)),
        snapshot=str(p.get("snapshot", "")),
        snapshot_count=int(p.get("snapshot_count", 0)),
        replace=bool(p.get("replace", False)),
        count=int(p["count"]) if p.get("count") is not None else None,
    )
    return _work_job(job, restore.snapshot_count, restore.count or 0, restore=restore)


def _work_job(job: Job, total: int, processed: int, **progress: Any) -> JobOut:
    """A job that runs in a gateway (tune, restore): its units of work in the ingest fields, its own progress."""
    return JobOut(
        job_id=job.job_id,
        collection=job.collection,
        status=job.status,  # type: ignore[arg-type]
        total=total,
        accepted=total,
        processed=processed,
        failed=0,
        truncated=0,
        errors=[],
        error=job.error,
        created_at=iso(job.created_at) or "",
        updated_at=iso(job.updated_at) or "",
        started_at=iso(job.started_at),
        finished_at=iso(job.finished_at),
        documents_per_second=None,
        kind=job.kind,  # type: ignore[arg-type]
        **progress,
    )


def _tune_progress(job: Job) -> TuneProgress:
    p = job.progress
    return TuneProgress(
        searches=int(p.get("searches", 0)),
        done=int(p.get("done", 0)),
        stage=str(p.get("stage", "queued")),
        result=TuneResultOut(**p["result"]) if p.get("result") else None,
    )


def tune_grid(grid: TuneGrid | None) -> tuple[list[GenerationConfig], list[FusionConfig]]:
    """The request's grid as the tuner takes it (the default grid where none is given)."""
    if grid is None:
        return parse_grid(None)
    return parse_grid(
        {
            # Only the fields given: a field the config does not name keeps the collection's value.
            "generation": [g.model_dump(exclude_unset=True) for g in grid.generation],
            "fusion": [f.model_dump() for f in grid.fusion],
        }
    )


def key_out(grant: KeyGrant, last_used: float | None) -> KeyOut:
    return KeyOut(
        id=grant.id,
        name=grant.name,
        scopes=list(grant.scopes),
        collections=None if grant.collections is None else list(grant.collections),
        expires_at=iso(grant.expires_at),
        rate_limits={k: RateLimit(**v) for k, v in grant.rate_limits.items()},
        created_at=iso(grant.created_at) or "",
        last_used_at=iso(last_used),
        digest_prefix=grant.digest[:12],
    )


def _warm_progress(job: Job) -> WarmProgress:
    p = {k: job.progress.get(k, 0) for k in ("queries", "done", "skipped", "warmed", "failed", "worker_requests")}
    rate = None
    if job.started_at is not None and p["done"]:
        rate = p["done"] / max((job.finished_at or job.updated_at) - job.started_at, 1e-3)
    return WarmProgress(**p, queries_per_second=rate)
