from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from service.api.auth import caller, refuse
from service.api.problems import RETRY_AFTER_S, Problem
from service.api.protocol import DependencyState, Health, Readiness

router = APIRouter(tags=["health"])

# Without these the service cannot answer searches at all; the others only degrade it.
HARD_DEPENDENCIES = {"vector_store", "embedder"}
# The circuit breaker guarding each dependency (the cache's is Redis', shared with the rate limiter).
BREAKER_OF = {"vector_store": "vector_store", "embedder": "embedder", "thinker": "thinker", "thought_cache": "redis"}
PROBE_TIMEOUT_S = 2.0


@router.get("/healthz", response_model=Health)
async def healthz() -> Health:
    return Health(status="ok")


@router.get("/readyz", response_model=Readiness, responses={503: {"model": Readiness}})
async def readyz(request: Request) -> JSONResponse:
    """Open, like /healthz; but dependency details (internal addresses) only to an `admin` key (never when open)."""
    probes = request.app.state.services.probes()
    states = await asyncio.gather(*(_probe(p) for p in probes.values()))
    dependencies = dict(zip(probes, states, strict=True))
    breakers = request.app.state.services.breakers
    for name, state in dependencies.items():
        state.breaker = breakers.state(BREAKER_OF[name]) if name in BREAKER_OF else None
    if not _shows_details(request):
        # The state stays (ok, breaker); the detail (a folder, an address, an error text) goes.
        dependencies = {
            name: DependencyState(ok=d.ok, detail="ok" if d.ok else "not ok", breaker=d.breaker)
            for name, d in dependencies.items()
        }
    if getattr(request.app.state, "draining", False):
        status, code = "draining", 503  # shutting down: take this replica out of the load balancer
    elif any(not dependencies[name].ok for name in HARD_DEPENDENCIES):
        status, code = "unavailable", 503
    elif all(d.ok for d in dependencies.values()):
        status, code = "ready", 200
    else:
        status, code = "degraded", 200
    body = Readiness(status=status, dependencies=dependencies)
    headers = {"Retry-After": str(RETRY_AFTER_S)} if code == 503 else None
    return JSONResponse(body.model_dump(), status_code=code, headers=headers)


def _shows_details(request: Request) -> bool:
    """Details (folders, addresses, error texts) only to an `admin` key. An open service (no API_KEYS) shows them to
    no one: every caller of an open service would be an admin, and /readyz is reachable wherever the API is."""
    if request.app.state.keys.open:
        return False
    principal = caller(request)
    return principal is not None and "admin" in principal.scopes


async def _probe(check) -> DependencyState:
    try:
        detail = await asyncio.wait_for(check(), PROBE_TIMEOUT_S)
    except Exception as exc:  # any failure of a dependency is a "not ok", never a 500
        return DependencyState(ok=False, detail=f"{type(exc).__name__}: {exc}"[:300])
    return DependencyState(ok=True, detail=detail or "ok")


@router.get("/metrics", include_in_schema=False)
async def prometheus_metrics(request: Request) -> Response:
    """METRICS_ACCESS: open, admin (an admin key; whoever calls an open service) or off (as if there were none)."""
    access = request.app.state.settings.metrics_access
    if access == "off":
        raise Problem(404, "Not Found")
    if access == "admin":
        principal = caller(request)
        if principal is None:
            raise refuse(401, "invalid", "Missing or invalid API key.", headers={"WWW-Authenticate": "Bearer"})
        if "admin" not in principal.scopes:
            raise refuse(403, "scope", "This key lacks the 'admin' scope.", principal)
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
