"""Aliases (docs/api.md "Aliases"): a name searches and writes follow to a collection, switched atomically."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response

from service.api.auth import refuse, require, require_json
from service.api.deps import PrincipalDep
from service.api.problems import Problem
from service.api.protocol import is_collection_name
from service.api.protocol_access import AliasList, AliasOut, AliasPut
from service.documents.aliases import Aliases

router = APIRouter(prefix="/v1/aliases", tags=["aliases"])


async def _aliases(request: Request) -> Aliases:
    return request.app.state.services.aliases


def _alias_name(alias: str) -> str:
    if not is_collection_name(alias):
        raise Problem(404, f"Alias '{alias[:80]}' does not exist.")
    return alias


@router.get("", response_model=AliasList, dependencies=[require("search")])
async def list_aliases(principal: PrincipalDep, aliases: Aliases = Depends(_aliases)) -> AliasList:  # noqa: B008
    table = await aliases.table(fresh=True)
    visible = sorted((a, c) for a, c in table.items() if principal.reaches(c) and principal.reaches(a))
    return AliasList(aliases=[AliasOut(alias=a, collection=c) for a, c in visible])


@router.put("/{alias}", response_model=AliasOut, dependencies=[require("admin"), Depends(require_json)])
async def put_alias(
    alias: str,
    body: AliasPut,
    principal: PrincipalDep,
    aliases: Aliases = Depends(_aliases),  # noqa: B008
) -> AliasOut:
    """Creates the alias or moves it to another collection, atomically: a search sees the old or the new one."""
    _alias_name(alias)
    current = (await aliases.table(fresh=True)).get(alias)
    for name in (alias, body.collection, current):
        if name is not None and not principal.reaches(name):
            raise refuse(403, "collection", "This key may not reach this collection.", principal)
    await aliases.put(alias, body.collection)
    return AliasOut(alias=alias, collection=body.collection)


@router.delete("/{alias}", status_code=204, response_class=Response, dependencies=[require("admin")])
async def delete_alias(alias: str, principal: PrincipalDep, aliases: Aliases = Depends(_aliases)) -> Response:  # noqa: B008
    _alias_name(alias)
    current = (await aliases.table(fresh=True)).get(alias)
    if current is None or not principal.reaches(current) or not principal.reaches(alias):
        raise Problem(404, f"Alias '{alias}' does not exist.")
    await aliases.remove([alias])
    return Response(status_code=204)
