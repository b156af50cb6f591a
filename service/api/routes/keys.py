"""API keys managed at run time (docs/api.md "Keys per tenant"): create, list, revoke. Only an `admin` key that
reaches every collection manages keys: a tenant's admin key could otherwise mint itself a wider one."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response

from service.api.auth import require, require_json
from service.api.deps import RuntimeKeysDep
from service.api.mappers import key_out
from service.api.problems import Problem
from service.api.protocol_access import KeyCreate, KeyCreated, KeyList

router = APIRouter(prefix="/v1/keys", tags=["keys"])


async def _unrestricted(request: Request) -> None:
    if not request.state.principal.unrestricted:
        raise Problem(403, "Only an admin key that reaches every collection manages keys.")


ADMIN = [require("admin"), Depends(_unrestricted)]


@router.post("", status_code=201, response_model=KeyCreated, dependencies=[*ADMIN, Depends(require_json)])
async def create_key(body: KeyCreate, keys: RuntimeKeysDep) -> KeyCreated:
    grant, secret = await keys.create(
        body.name,
        tuple(dict.fromkeys(body.scopes)),
        None if body.collections is None else tuple(dict.fromkeys(body.collections)),
        None if body.expires_at is None else body.expires_at.timestamp(),
        {scope: limit.model_dump() for scope, limit in body.rate_limits.items()},
    )
    return KeyCreated(**key_out(grant, None).model_dump(), key=secret)


@router.get("", response_model=KeyList, dependencies=ADMIN)
async def list_keys(keys: RuntimeKeysDep) -> KeyList:
    return KeyList(keys=[key_out(grant, used) for grant, used in await keys.list()])


@router.delete("/{key_id}", status_code=204, response_class=Response, dependencies=ADMIN)
async def revoke_key(key_id: str, keys: RuntimeKeysDep) -> Response:
    if not await keys.revoke(key_id):
        raise Problem(404, "No such key.")
    return Response(status_code=204)
