from __future__ import annotations

from fastapi import APIRouter, Depends

from service.api.auth import require, require_json
from service.api.deps import CollectionName, PipelineDep, SettingsDep
from service.api.limits import check_search
from service.api.protocol import SearchHit, SearchRequest, SearchResponse

router = APIRouter(prefix="/v1/collections/{name}", tags=["search"])


@router.post("/search", response_model=SearchResponse, dependencies=[require("search"), Depends(require_json)])
async def search(
    name: CollectionName, body: SearchRequest, pipeline: PipelineDep, settings: SettingsDep
) -> SearchResponse:
    check_search(body, settings)
    outcome = await pipeline.search(name, body)
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
    )
