"""Contract fuzzing against a live gateway on Qdrant Edge (the embedded default), with a collection for requests to
reach: 0 responses 5xx, whatever is sent. Bounded and seeded (about a minute on two cores).

- schemathesis generates requests from /openapi.json for every operation (coverage, fuzzing and stateful phases,
  positive and negative data), and tests/api/fuzz_hooks.py turns them hostile: control characters, JSON-path
  keys (`a[`, `""`), very long strings, lone surrogates, integers past 64 bits, NaN and Infinity, arrays nested
  past the parser's depth, aimed at the collection that exists;
- every route of the app, those outside the schema too (/metrics, /docs), with hostile path values and bodies;
- the bulk route's NDJSON body (not in the schema), line by line, by hypothesis.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.routing import Route

from service.settings import Settings
from tests.api.fuzz_hooks import FUZZ_COLLECTION, KEYS, PATH_STRINGS, RAW_TOKENS, TARGETED, hostile_object
from tests.ingest.support import NDJSON, wait_job
from tests.support.gateway import Gateway
from tests.support.servers import REPO_ROOT

SCHEMATHESIS = Path(sys.executable).parent / "schemathesis"
DOCS = [
    {"id": "d1", "text": "Tides are caused by the Moon.", "metadata": {"lang": "en", "year": 2020, "tags": ["sea"]}},
    {"id": "d2", "text": "Cats are small felines.", "metadata": {"lang": "de", "ok": True, "score": 0.5}},
]


@pytest.fixture(scope="module")
def gw(tmp_path_factory):
    folder = tmp_path_factory.mktemp("edge-fuzz")
    with Gateway(Settings(_env_file=None, qdrant_embedded="edge", qdrant_path=str(folder))) as gateway:
        assert gateway.client.post("/v1/collections", json={"name": FUZZ_COLLECTION}).status_code == 201
        r = gateway.client.post(f"/v1/collections/{FUZZ_COLLECTION}/documents", json={"documents": DOCS})
        assert r.status_code == 200
        yield gateway
        ready = gateway.client.get("/readyz")
        assert ready.status_code == 200 and ready.json()["status"] == "ready", ready.text


def test_openapi_contract_holds_under_generated_hostile_requests(gw):
    if not SCHEMATHESIS.exists() and shutil.which("schemathesis") is None:
        pytest.skip("schemathesis is not installed (it comes with the dev extra: pip install -e '.[dev]')")
    env = {**os.environ, "SCHEMATHESIS_HOOKS": "tests.api.fuzz_hooks", "PYTHONPATH": str(REPO_ROOT)}
    run = subprocess.run(
        [
            str(SCHEMATHESIS if SCHEMATHESIS.exists() else shutil.which("schemathesis")),
            "run",
            f"{gw.url}/openapi.json",
            "--checks",
            "not_a_server_error,response_schema_conformance",
            "--max-examples",
            "200",
            "--seed",
            "20261123",
            "--workers",
            "1",
            "--generation-codec",
            "utf-8",
            "--generation-allow-x00",
            "true",
            "--suppress-health-check",
            "all",
            "--generation-database",
            "none",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO_ROOT,
        env=env,
    )
    report = run.stdout[-6000:] + run.stderr[-2000:]
    assert run.returncode == 0, report
    summary = run.stdout.split("SUMMARY")[-1]
    assert " passed" in run.stdout and "failed" not in summary and "Server error" not in summary, report
    tested = re.search(r"Tested: (\d+)", summary)
    assert tested and int(tested.group(1)) >= 16, report  # every operation of the schema


def all_routes(routes) -> list[Route]:
    """Every route, looking inside included routers (FastAPI keeps them as wrappers)."""
    found: list[Route] = []
    for route in routes:
        if isinstance(route, Route):
            found.append(route)
        elif (inner := getattr(route, "original_router", None)) is not None:
            found.extend(all_routes(inner.routes))
    return found


RAW_BODIES = [*RAW_TOKENS[:3], "{", "", "null", '{"filter": {"a[": NaN}}', "[" * 100_000 + "]" * 100_000]


def test_every_route_with_hostile_paths_and_bodies(gw):
    routes = all_routes(gw.app.routes)
    assert {"/metrics", "/docs", "/openapi.json", "/v1/collections/{name}/documents/bulk"} <= {r.path for r in routes}
    values = [FUZZ_COLLECTION, *PATH_STRINGS[:8]]
    sent = 0
    for route in routes:
        for method in sorted(route.methods or {"GET"}):
            for i, value in enumerate(values):
                if method == "DELETE" and route.path == "/v1/collections/{name}" and value == FUZZ_COLLECTION:
                    continue  # the next test needs it
                path = re.sub(r"\{(\w+)(:path)?\}", lambda m, v=value: quote(v, safe=""), route.path)
                body = RAW_BODIES[i % len(RAW_BODIES)]
                for headers in ({"content-type": "application/json"}, NDJSON):
                    url = f"{path}?limit=99999999999999999999&collection=a%5B%0A"
                    r = gw.client.request(method, url, content=body, headers=headers)
                    assert r.status_code < 500, (method, path, body[:60], r.status_code, r.text[:300])
                    sent += 1
    assert sent > 300


def _line(template: str, part: str) -> bytes:
    return template.replace("@", part, 1).encode("utf-8", "surrogatepass")


# The upsert's hostile documents, one per line: '{"documents": [<document>]}' -> '<document>'.
DOCUMENT_LINES = [
    t.removeprefix('{"documents": [').removesuffix("]}") for t in TARGETED["/v1/collections/{name}/documents"]
]
ndjson_line = st.one_of(
    st.builds(lambda i: json.dumps({"id": f"ok-{i}", "text": f"valid line {i}"}).encode(), st.integers(0, 50)),
    st.builds(_line, st.sampled_from(DOCUMENT_LINES), st.one_of(hostile_object(), st.sampled_from(RAW_TOKENS))),
    st.sampled_from(RAW_TOKENS).map(lambda t: t.encode("utf-8", "surrogatepass")),
    st.sampled_from([b"\xff\xfe", b"\x00", b"{}", b"[]", b'{"id": "k", "text": "t", "' + KEYS[0].encode() + b'": 1}']),
    st.binary(max_size=200),
)


@settings(max_examples=12, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck))
@given(lines=st.lists(ndjson_line, min_size=1, max_size=12))
def test_hostile_ndjson_lines_are_rejected_by_line(gw, lines):
    body = b"\n".join(line.replace(b"\n", b" ") for line in lines) + b"\n"
    r = gw.client.post(f"/v1/collections/{FUZZ_COLLECTION}/documents/bulk", content=body, headers=NDJSON)
    assert r.status_code == 202, r.text[:300]
    job = wait_job(gw.client, r.json()["job_id"], timeout=120)
    assert job["status"] == "succeeded", job
    assert job["accepted"] + job["failed"] == job["total"] and job["processed"] == job["accepted"]
    assert all(1 <= e["line"] <= len(lines) for e in job["errors"])
