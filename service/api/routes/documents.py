from __future__ import annotations

from fastapi import APIRouter, Depends, Response

from service.api.auth import require, require_json
from service.api.deps import CatalogDep, CollectionName, SettingsDep
from service.api.limits import check_upsert
from service.api.mappers import document_out
from service.api.problems import Problem
from service.api.protocol import DocumentOut, UpsertRequest, UpsertResponse

router = APIRouter(prefix="/v1/collections/{name}/documents", tags=["documents"])


@router.post("", response_model=UpsertResponse, dependencies=[require("ingest"), Depends(require_json)])
async def upsert_documents(
    name: CollectionName, body: UpsertRequest, catalog: CatalogDep, settings: SettingsDep
) -> UpsertResponse:
    check_upsert(body, settings)
    upserted, truncated = await catalog.upsert(name, body.documents)
    return UpsertResponse(upserted=upserted, truncated=truncated)


# `:path` because document ids may contain "/" (percent-encoded or not).
@router.get("/{doc_id:path}", response_model=DocumentOut, dependencies=[require("search")])
async def get_document(name: CollectionName, doc_id: str, catalog: CatalogDep) -> DocumentOut:
    doc = await catalog.get(name, doc_id)
    if doc is None:
        raise Problem(404, f"Document '{doc_id[:80]}' is not in collection '{name}'.")
    return document_out(doc)


@router.delete("/{doc_id:path}", status_code=204, response_class=Response, dependencies=[require("ingest")])
async def delete_document(name: CollectionName, doc_id: str, catalog: CatalogDep) -> Response:
    if not await catalog.delete(name, doc_id):
        raise Problem(404, f"Document '{doc_id[:80]}' is not in collection '{name}'.")
    return Response(status_code=204)
