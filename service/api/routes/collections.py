from __future__ import annotations

from fastapi import APIRouter, Depends, Response

from service.api.auth import refuse, require, require_json
from service.api.deps import CatalogDep, CollectionName, PrincipalDep
from service.api.mappers import chunking_params, described, hnsw_params, policy_changes, think_policy
from service.api.protocol import (
    CollectionCreate,
    CollectionCreated,
    CollectionDetail,
    CollectionList,
    CollectionPatch,
    CollectionSummary,
    ThinkPolicyOut,
)

router = APIRouter(prefix="/v1/collections", tags=["collections"])


@router.post(
    "",
    status_code=201,
    response_model=CollectionCreated,
    dependencies=[require("admin"), Depends(require_json)],
)
async def create_collection(body: CollectionCreate, catalog: CatalogDep, principal: PrincipalDep) -> CollectionCreated:
    if not principal.reaches(body.name):
        raise refuse(403, "collection", "This key may not reach this collection.", principal)
    hnsw = hnsw_params(body.hnsw.m, body.hnsw.ef_construct) if body.hnsw else None
    chunking = chunking_params(body.chunking)
    policy = think_policy(body.think) if body.think else None
    info = await catalog.create_collection(body.name, hnsw, chunking, sparse=body.sparse, policy=policy)
    return CollectionCreated(**described(info))


@router.get("", response_model=CollectionList, dependencies=[require("search")])
async def list_collections(catalog: CatalogDep, principal: PrincipalDep) -> CollectionList:
    pairs = [(n, c) for n, c in await catalog.list_collections() if principal.reaches(n)]
    return CollectionList(collections=[CollectionSummary(name=n, count=c) for n, c in pairs])


@router.get("/{name}", response_model=CollectionDetail, dependencies=[require("search")])
async def get_collection(name: CollectionName, catalog: CatalogDep) -> CollectionDetail:
    info = await catalog.describe(name)
    think = ThinkPolicyOut(**await catalog.policy(name))
    return CollectionDetail(count=info.count, think=think, **described(info))


@router.patch(
    "/{name}",
    response_model=CollectionDetail,
    dependencies=[require("admin"), Depends(require_json)],
)
async def update_collection(name: CollectionName, body: CollectionPatch, catalog: CatalogDep) -> CollectionDetail:
    """Changes the collection's think policy: seen by every replica within a second (docs/api.md)."""
    info, policy = await catalog.update_policy(name, policy_changes(body.think))
    think = ThinkPolicyOut(**policy)
    return CollectionDetail(count=info.count, think=think, **described(info))


@router.delete("/{name}", status_code=204, response_class=Response, dependencies=[require("admin")])
async def delete_collection(name: CollectionName, catalog: CatalogDep, force: bool = False) -> Response:
    """409 while aliases point to it, unless `?force=true` (its aliases are removed with it)."""
    await catalog.drop_collection(name, force=force)
    return Response(status_code=204)
