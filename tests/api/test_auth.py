"""API keys: every route x (no key, wrong key, wrong scope, right scope), hashed keys, open probes that keep their
details to admins, and keys that never reach the logs. Real HTTP, real MiniLM, embedded Qdrant."""

from __future__ import annotations

import hashlib
import logging
import re

import pytest
from fastapi.routing import APIRoute

from service.settings import Settings
from tests.support.gateway import Gateway

ADMIN_KEY = "adm-7f3a-raw-secret"  # configured only as its SHA-256 digest
KEYS = {
    "k-search-only": ["search"],
    "k-ingest-only": ["ingest"],
    "k-search-ingest": ["search", "ingest"],
    f"sha256:{hashlib.sha256(ADMIN_KEY.encode()).hexdigest()}": {"scopes": ["admin"], "name": "ops"},
}
RIGHT = {"search": "k-search-only", "ingest": "k-ingest-only", "admin": ADMIN_KEY}
WRONG = {"search": "k-ingest-only", "ingest": "k-search-only", "admin": "k-search-ingest"}
OPEN_PATHS = {"/healthz", "/readyz", "/metrics", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"}
# The browser console's own files (docs/api.md, "Console"): the page asks for a key and calls the API with it.
OPEN_PATHS |= {"/", "/ui", "/ui/{page:path}", "/ui/assets/{asset}"}
PARAMS = {
    "name": "matrix",
    "doc_id": "d1",
    "job_id": "no-such-job",
    "key_id": "no-such-key",
    "alias": "no-such-alias",
    "snapshot_id": "20000101T000000000Z-00000000",
}


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture(scope="module")
def gw():
    with Gateway(Settings(_env_file=None, qdrant_path=":memory:", api_keys=KEYS)) as gateway:
        yield gateway


def required_scope(route: APIRoute) -> str | None:
    for dependency in route.dependant.dependencies:
        scope = getattr(dependency.call, "required_scope", None)
        if scope:
            return scope
    return None


def concrete(path: str) -> str:
    return re.sub(r"\{(\w+)(:path)?\}", lambda m: PARAMS[m.group(1)], path)


def api_routes(routes) -> list[APIRoute]:
    """Every APIRoute, looking inside included routers (FastAPI keeps them as wrappers)."""
    found = []
    for route in routes:
        if isinstance(route, APIRoute):
            found.append(route)
        elif (inner := getattr(route, "original_router", None)) is not None:
            found.extend(api_routes(inner.routes))
    return found


def protected_routes(app) -> list[tuple[str, str, str]]:
    rows = []
    for route in api_routes(app.routes):
        if not isinstance(route, APIRoute):
            continue
        scope = required_scope(route)
        if scope is None:
            assert route.path in OPEN_PATHS, f"{route.path} has no scope requirement"
            continue
        rows.extend((method, route.path, scope) for method in sorted(route.methods))
    return rows


def test_every_route_by_key(gw):
    c = gw.client
    rows = protected_routes(gw.app)
    assert len(rows) >= 8  # collections, documents and search at least
    for method, template, scope in rows:
        path = concrete(template)
        # The right key for each call; the collection is recreated, since an admin DELETE may remove it.
        c.post("/v1/collections", json={"name": "matrix"}, headers=auth(ADMIN_KEY))
        send = lambda headers, m=method, p=path: c.request(m, p, json={}, headers=headers)  # noqa: E731
        for headers, expected in (({}, 401), (auth("not-a-key"), 401), (auth(WRONG[scope]), 403)):
            r = send(headers)
            assert r.status_code == expected, (method, template, headers, r.text)
            assert r.headers["content-type"].startswith("application/problem+json")
        r = send(auth(RIGHT[scope]))
        assert r.status_code not in (401, 403), (method, template, r.text)
        # admin implies every scope
        assert send(auth(ADMIN_KEY)).status_code not in (401, 403), (method, template)


def test_health_and_metrics_stay_open(gw):
    assert gw.client.get("/healthz").status_code == 200
    assert gw.client.get("/metrics").status_code == 200
    assert gw.client.get("/readyz").status_code == 200


def test_readiness_details_only_for_admins(gw):
    anonymous = gw.client.get("/readyz").json()
    searcher = gw.client.get("/readyz", headers=auth("k-search-only")).json()
    admin = gw.client.get("/readyz", headers=auth(ADMIN_KEY)).json()
    for body in (anonymous, searcher):
        assert body["status"] == "ready"
        assert {d["detail"] for d in body["dependencies"].values()} == {"ok"}
    assert "embedded" in admin["dependencies"]["vector_store"]["detail"]
    assert "MiniLM" in admin["dependencies"]["embedder"]["detail"]


def test_keys_never_reach_the_logs(gw, caplog):
    caplog.set_level(logging.INFO)
    for key in (ADMIN_KEY, "k-search-only", "not-a-key"):
        gw.client.get("/v1/collections", headers=auth(key))
    text = "\n".join(f"{r.getMessage()} {getattr(r, 'fields', '')}" for r in caplog.records)
    for key in (ADMIN_KEY, "k-search-only", "not-a-key"):
        assert key not in text
    key_ids = {r.fields.get("key_id") for r in caplog.records if hasattr(r, "fields")}
    assert "ops" in key_ids  # a named key by its name
    digest = hashlib.sha256(b"k-search-only").hexdigest()[:12]
    assert f"key:{digest}" in key_ids  # an unnamed key by a prefix of its digest


@pytest.mark.parametrize("entry", ["sha256:abc", "sha256:" + "zz" * 32, "sha256:" + "ab" * 31])
def test_malformed_hashed_key_fails_at_startup_without_echoing_it(entry):
    from service.app import create_app

    with pytest.raises(ValueError) as failure:
        create_app(Settings(_env_file=None, qdrant_path=":memory:", api_keys={entry: ["search"]}))
    assert entry not in str(failure.value)
