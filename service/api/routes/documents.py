from __future__ import annotations

import json
import uuid
from typing import Any

from fastapi import APIRouter, Depends, Query, Response
from pydantic import TypeAdapter, ValidationError

from service.api.auth import require, require_json
from service.api.deps import CatalogDep, CollectionName, SettingsDep
from service.api.limits import check_upsert
from service.api.mappers import document_out
from service.api.problems import Problem, field_error
from service.api.protocol import (
    DeleteWhereRequest,
    DeleteWhereResponse,
    DocumentOut,
    DocumentPageOut,
    Filter,
    UpsertRequest,
    UpsertResponse,
)

router = APIRouter(prefix="/v1/collections/{name}/documents", tags=["documents"])
_FILTER = TypeAdapter(Filter)


@router.post("", response_model=UpsertResponse, dependencies=[require("ingest"), Depends(require_json)])
async def upsert_documents(
    name: CollectionName, body: UpsertRequest, catalog: CatalogDep, settings: SettingsDep
) -> UpsertResponse:
    check_upsert(body, settings)
    upserted, truncated = await catalog.upsert(name, body.documents)
    return UpsertResponse(upserted=upserted, truncated=truncated)


@router.get("", response_model=DocumentPageOut, dependencies=[require("search")])
async def browse_documents(
    name: CollectionName,
    catalog: CatalogDep,
    limit: int = Query(default=50, ge=1, le=1000),
    cursor: str | None = Query(default=None, max_length=64),
    filter: str | None = Query(default=None, max_length=65536),
) -> DocumentPageOut:
    """Documents page by page in a stable order (point ids), each once even when chunked (docs/api.md)."""
    page = await catalog.browse(name, limit, _cursor(cursor), _browse_filter(filter))
    return DocumentPageOut(documents=[document_out(d) for d in page.documents], next_cursor=page.next_cursor)


@router.post("/delete", response_model=DeleteWhereResponse, dependencies=[require("ingest"), Depends(require_json)])
async def delete_where(name: CollectionName, body: DeleteWhereRequest, catalog: CatalogDep) -> DeleteWhereResponse:
    """Every document matching the filter, or with one of the ids, with all its chunks."""
    if (body.filter is None) == (body.ids is None):
        raise field_error("body", "give either 'filter' or 'ids'")
    if body.filter is not None and not body.filter:
        raise field_error(
            "filter", f"an empty filter matches everything: to delete it all, DELETE /v1/collections/{name}"
        )
    ids = sorted(set(body.ids)) if body.ids is not None else None
    return DeleteWhereResponse(deleted=await catalog.delete_where(name, equal=body.filter or None, ids=ids))


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


def _cursor(cursor: str | None) -> str | None:
    """A cursor is the `next_cursor` of an earlier page (a point id); anything else is the client's mistake."""
    if not cursor:
        return None
    try:
        return str(uuid.UUID(cursor))
    except ValueError:
        raise field_error("cursor", "not a cursor of this API: pass the next_cursor of the previous page") from None


def _browse_filter(text: str | None) -> dict[str, Any] | None:
    """`filter` is URL-encoded JSON with the rules of a search filter (docs/api.md, "Metadata and filters")."""
    if text is None or not text.strip():
        return None
    try:
        value = json.loads(text)
    except RecursionError:
        raise field_error("filter", "nested too deeply") from None
    except ValueError as exc:
        raise field_error("filter", f"not valid JSON ({exc.msg} at character {exc.pos})") from None
    if not isinstance(value, dict):
        raise field_error("filter", "must be a JSON object of metadata keys and values")
    try:
        return _FILTER.validate_python(value) or None
    except ValidationError as exc:
        message = "; ".join(e["msg"].removeprefix("Value error, ") for e in exc.errors()[:3])
        raise field_error("filter", message) from None
