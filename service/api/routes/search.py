"""Search routes: single (JSON or Server-Sent Events), batch, and warming."""

from __future__ import annotations

from collections.abc import AsyncIterator

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response, StreamingResponse

from service.api.auth import require, require_json
from service.api.deps import CollectionName, PipelineDep, SettingsDep, WarmingDep
from service.api.limits import check_batch, check_search, check_warm
from service.api.mappers import job_out, search_spec, to_response
from service.api.problems import Problem
from service.api.protocol import (
    BatchSearchRequest,
    BatchSearchResponse,
    JobOut,
    SearchRequest,
    SearchResponse,
    StreamDone,
    WarmRequest,
)
from service.model.errors import CollectionNotFound
from service.model.search import SearchOutcome
from service.observability.context import annotate_request
from service.search.pipeline import SearchPipeline

router = APIRouter(prefix="/v1/collections/{name}", tags=["search"])
EVENT_STREAM = "text/event-stream"


@router.post(
    "/search",
    response_model=SearchResponse,
    dependencies=[require("search"), Depends(require_json)],
    responses={200: {"content": {EVENT_STREAM: {}}}},
)
async def search(
    name: CollectionName, body: SearchRequest, request: Request, pipeline: PipelineDep, settings: SettingsDep
):
    check_search(body, settings)
    if settings.log_queries:
        annotate_request(query=body.query)
    if body.stream or EVENT_STREAM in request.headers.get("accept", ""):
        annotate_request(stream=True)
        return await _stream(name, body, pipeline)
    outcome = await pipeline.search(name, search_spec(body))
    _annotate(outcome)
    return _json(to_response(outcome))


def _annotate(outcome: SearchOutcome) -> None:
    """The search's part of its access-log line."""
    annotate_request(
        mode=outcome.mode,
        thought_cache=outcome.thought_cache,
        degraded_reason=outcome.reason,
        timings_ms=outcome.timings_ms,
    )


async def _stream(name: str, body: SearchRequest, pipeline: SearchPipeline) -> StreamingResponse:
    outcomes = aiter(pipeline.stream(name, search_spec(body)))
    # The first outcome is awaited before answering, so a 404 or a 503 is still a plain problem response.
    first = await anext(outcomes)

    async def events() -> AsyncIterator[str]:
        outcome = first
        try:
            while True:
                if outcome is first or outcome.mode == "think":  # a degraded end repeats no results
                    yield _event(outcome.mode, to_response(outcome).model_dump_json())
                last = outcome
                outcome = await anext(outcomes, None)
                if outcome is None:
                    break
        finally:
            await outcomes.aclose()
        _annotate(last)
        done = StreamDone(mode=last.mode, degraded=last.degraded, reason=last.reason)  # type: ignore[arg-type]
        yield _event("done", done.model_dump_json())

    return StreamingResponse(
        events(), media_type=EVENT_STREAM, headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
    )


def _event(name: str, data: str) -> str:
    return f"event: {name}\ndata: {data}\n\n"


@router.post(
    "/search/batch",
    response_model=BatchSearchResponse,
    dependencies=[require("search"), Depends(require_json)],
)
async def search_batch(
    name: CollectionName, body: BatchSearchRequest, pipeline: PipelineDep, settings: SettingsDep
) -> Response:
    check_batch(body, settings)
    if not await pipeline.store.exists(name):  # one check per batch: no worker or embedder time for a 404
        raise CollectionNotFound(name)
    outcomes = await pipeline.search_batch(name, [search_spec(s) for s in body.searches])
    return _json(BatchSearchResponse(responses=[to_response(o) for o in outcomes]))


def _json(model: SearchResponse | BatchSearchResponse) -> Response:
    # Serialised once here: returning the model would make FastAPI validate and serialise it a second time.
    return Response(model.model_dump_json(), media_type="application/json")


@router.post(
    "/warm",
    status_code=202,
    response_model=JobOut,
    dependencies=[require("ingest"), Depends(require_json)],
)
async def warm(
    name: CollectionName, body: WarmRequest, pipeline: PipelineDep, warming: WarmingDep, settings: SettingsDep
) -> Response:
    """Think, embed and cache the queries ahead of traffic, as a job: 202 now, progress at GET /v1/jobs/{id}.
    (The collection only scopes the route: the cached vectors do not depend on it.)"""
    check_warm(body, settings)
    if pipeline.thinker is None:
        raise Problem(409, "No thought worker is configured (THINKER_URL): there is nothing to warm.")
    if not await pipeline.store.exists(name):
        raise CollectionNotFound(name)
    job = await warming.start(name, body.queries)
    return Response(
        job_out(job).model_dump_json(),
        status_code=202,
        media_type="application/json",
        headers={"Location": f"/v1/jobs/{job.job_id}"},
    )
