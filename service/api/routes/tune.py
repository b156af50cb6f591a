"""Tuning a collection's think policy on a judged sample, as a job (docs/api.md)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Response

from service.api.auth import require, require_json
from service.api.deps import CatalogDep, CollectionName, PipelineDep, SettingsDep, TuneJobsDep
from service.api.limits import check_tune
from service.api.mappers import job_out, tune_grid
from service.api.problems import Problem, field_error
from service.api.protocol import JobOut, TuneRequest

router = APIRouter(prefix="/v1/collections/{name}/tune", tags=["tuning"])


@router.post("", status_code=202, response_model=JobOut, dependencies=[require("admin"), Depends(require_json)])
async def tune(
    name: CollectionName,
    body: TuneRequest,
    pipeline: PipelineDep,
    catalog: CatalogDep,
    tuning: TuneJobsDep,
    settings: SettingsDep,
) -> Response:
    """Direct and a grid of think policies scored on the judged queries; the best written at the end (thinking off
    where nothing beats direct). 202 now, progress and the table at GET /v1/jobs/{id}."""
    queries = check_tune(body, settings)
    try:
        generations, fusions = tune_grid(body.grid)
    except ValueError as exc:
        raise field_error("grid", str(exc)) from None
    if pipeline.thinker is None:
        raise Problem(409, "No thought worker is configured (THINKER_URL): there is no thinking to tune.")
    info = await catalog.describe(name)  # 404 for an unknown collection
    if not info.count:
        raise Problem(409, f"Collection '{name}' is empty: load the corpus the judgements refer to first.")
    for g in generations:  # a profile the collection cannot take is a 422 now, not a failed job later
        await catalog.check_policy(name, g.fields)
    qrels = {q: body.qrels[q] for q in queries}
    job = await tuning.start(
        name,
        queries,
        qrels,
        generations,
        fusions,
        dry_run=body.dry_run,
        min_gain=body.min_gain,
        deadline_ms=body.deadline_ms,
        concurrency=body.concurrency,
    )
    return Response(
        job_out(job).model_dump_json(),
        status_code=202,
        media_type="application/json",
        headers={"Location": f"/v1/jobs/{job.job_id}"},
    )
