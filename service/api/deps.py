"""Typed dependency aliases: handlers ask for the service object they need, created in the lifespan.

All `async def`: FastAPI runs a plain `def` dependency in its thread pool, a thread hand-off per dependency per
request (a third of the gateway's time on the cached-search hot path, measured with loadtests/profile_hot_path.py).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from service.access.keys import RuntimeKeys
from service.api.auth import Principal
from service.api.problems import Problem
from service.api.protocol import is_collection_name
from service.documents.catalog import Catalog
from service.ingest.ingestion import Ingestion
from service.observability.context import add_response_headers
from service.search.pipeline import SearchPipeline
from service.search.tune_jobs import TuneJobs
from service.search.warming import Warming
from service.settings import Settings


async def _settings(request: Request) -> Settings:
    return request.app.state.settings


async def _catalog(request: Request) -> Catalog:
    return request.app.state.services.catalog


async def _pipeline(request: Request) -> SearchPipeline:
    return request.app.state.services.pipeline


async def _warming(request: Request) -> Warming:
    return request.app.state.services.warming


async def _tuning(request: Request) -> TuneJobs:
    return request.app.state.services.tuning


async def _principal(request: Request) -> Principal:
    """The caller `require` authenticated (route dependencies run before the handler's own)."""
    return request.state.principal


async def _runtime_keys(request: Request) -> RuntimeKeys:
    return request.app.state.services.runtime_keys


async def _ingestion(request: Request) -> Ingestion:
    return request.app.state.services.ingestion


async def _collection_name(name: str, request: Request) -> str:
    """The real collection the path names: an alias resolved (by `require`, which runs first), never an alias."""
    # A name that cannot exist is simply an unknown collection (and never reaches Qdrant).
    if not is_collection_name(name):  # fullmatch: a trailing newline is no valid name
        raise Problem(404, f"Collection '{name[:80]}' does not exist.")
    real = getattr(request.state, "collection", None)
    if real is None:
        aliases = request.app.state.services.aliases
        real = await aliases.resolve(name) if aliases is not None else name
    add_response_headers({"X-Collection": real})  # the collection that answered, alias or not
    return real


SettingsDep = Annotated[Settings, Depends(_settings)]
CatalogDep = Annotated[Catalog, Depends(_catalog)]
PipelineDep = Annotated[SearchPipeline, Depends(_pipeline)]
CollectionName = Annotated[str, Depends(_collection_name)]
IngestionDep = Annotated[Ingestion, Depends(_ingestion)]
WarmingDep = Annotated[Warming, Depends(_warming)]
TuneJobsDep = Annotated[TuneJobs, Depends(_tuning)]
RuntimeKeysDep = Annotated[RuntimeKeys, Depends(_runtime_keys)]
PrincipalDep = Annotated[Principal, Depends(_principal)]
