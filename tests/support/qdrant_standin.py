"""TEST-ONLY STAND-IN for a Qdrant server. Never shipped, never used outside tests.

No Qdrant server binary can be installed on the build machines, yet server mode (`QDRANT_URL`) and several
processes sharing one store (separate ingestion workers) must be tested. This small HTTP app serves the part of
Qdrant's REST API that qdrant-client calls (collections, payload indexes, upsert, count, retrieve, scroll, delete by ids
or filter, query, query groups), backed by qdrant-client's own local mode, so the service under test talks real
qdrant-client over real HTTP.
Everything runs on one event loop: requests are applied one at a time, as local mode requires.

    python -m tests.support.qdrant_standin --port 6333 --path /tmp/store
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from qdrant_client import QdrantClient, models

from tests.support.qdrant_standin_snapshots import add_snapshot_routes
from tests.support.servers import _ManagedProcess, free_port, wait_http

# qdrant-client checks the server's version against its own (major equal, minor within 1).
SERVER_VERSION = "1.20.0"
ROOT = Path(__file__).resolve().parents[2]


def _ok(result: Any) -> JSONResponse:
    if isinstance(result, BaseModel):
        result = result.model_dump(mode="json")
    elif isinstance(result, list):
        result = [r.model_dump(mode="json") if isinstance(r, BaseModel) else r for r in result]
    return JSONResponse({"result": result, "status": "ok", "time": 0.0})


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"status": {"error": message}, "time": 0.0}, status_code=status)


def _query_args(body: models.QueryRequest | models.QueryGroupsRequest) -> dict[str, Any]:
    return {
        "query": body.query.nearest if isinstance(body.query, models.NearestQuery) else body.query,
        "using": body.using,
        "prefetch": body.prefetch,
        "limit": body.limit or 10,
        "query_filter": body.filter,
        "with_payload": body.with_payload if body.with_payload is not None else False,
    }


def create_app(path: str) -> FastAPI:
    client = QdrantClient(location=":memory:") if path == ":memory:" else QdrantClient(path=path)
    app = FastAPI(title="Qdrant REST stand-in (tests only)")

    @app.exception_handler(ValueError)
    async def not_found(_: Request, exc: ValueError) -> JSONResponse:
        text = str(exc)
        return _error(404 if "not found" in text.lower() else 400, f"Bad request: {text}")

    @app.get("/")
    async def root() -> dict[str, str]:
        return {"title": "qdrant REST stand-in for tests", "version": SERVER_VERSION}

    @app.get("/collections")
    async def collections() -> JSONResponse:
        return _ok(client.get_collections())

    @app.get("/aliases")
    async def aliases() -> JSONResponse:
        return _ok(client.get_aliases())

    @app.post("/collections/aliases")
    async def change_aliases(body: models.ChangeAliasesOperation) -> JSONResponse:
        return _ok(client.update_collection_aliases(change_aliases_operations=body.actions))

    @app.get("/collections/{name}/exists")
    async def exists(name: str) -> JSONResponse:
        return _ok({"exists": client.collection_exists(name)})

    @app.get("/collections/{name}")
    async def get_collection(name: str) -> JSONResponse:
        if not client.collection_exists(name):
            return _error(404, f"Not found: Collection `{name}` doesn't exist!")
        return _ok(client.get_collection(name))

    @app.put("/collections/{name}")
    async def create_collection(name: str, body: models.CreateCollection) -> JSONResponse:
        if client.collection_exists(name):
            return _error(409, f"Wrong input: Collection `{name}` already exists!")
        return _ok(
            client.create_collection(
                name, vectors_config=body.vectors, sparse_vectors_config=body.sparse_vectors, metadata=body.metadata
            )
        )

    @app.patch("/collections/{name}")
    async def update_collection(name: str, body: models.UpdateCollection) -> JSONResponse:
        if not client.collection_exists(name):
            return _error(404, f"Not found: Collection `{name}` doesn't exist!")
        return _ok(client.update_collection(name, metadata=body.metadata))

    @app.delete("/collections/{name}")
    async def delete_collection(name: str) -> JSONResponse:
        return _ok(client.delete_collection(name))

    @app.put("/collections/{name}/points")
    async def upsert(name: str, body: models.PointsList) -> JSONResponse:
        return _ok(client.upsert(name, points=body.points, wait=True))

    @app.post("/collections/{name}/points/count")
    async def count(name: str, body: models.CountRequest) -> JSONResponse:
        return _ok(client.count(name, count_filter=body.filter, exact=body.exact if body.exact is not None else True))

    @app.post("/collections/{name}/points")
    async def retrieve(name: str, body: models.PointRequest) -> JSONResponse:
        return _ok(
            client.retrieve(
                name, ids=body.ids, with_payload=body.with_payload or False, with_vectors=body.with_vector or False
            )
        )

    @app.post("/collections/{name}/points/scroll")
    async def scroll(name: str, body: models.ScrollRequest) -> JSONResponse:
        records, offset = client.scroll(
            name,
            scroll_filter=body.filter,
            limit=body.limit or 10,
            offset=body.offset,
            with_payload=body.with_payload if body.with_payload is not None else True,
            with_vectors=body.with_vector or False,
        )
        return _ok({"points": [r.model_dump(mode="json") for r in records], "next_page_offset": offset})

    @app.post("/collections/{name}/points/delete")
    async def delete(name: str, body: models.PointIdsList | models.FilterSelector) -> JSONResponse:
        return _ok(client.delete(name, points_selector=body, wait=True))

    @app.put("/collections/{name}/index")
    async def create_index(name: str, body: models.CreateFieldIndex) -> JSONResponse:
        # Local mode keeps no payload indexes (filters scan): accepted as a no-op, as local mode does.
        client.get_collection(name)  # an unknown collection is still a 404
        return _ok({"operation_id": 0, "status": "completed"})

    @app.post("/collections/{name}/points/query")
    async def query(name: str, body: models.QueryRequest) -> JSONResponse:
        return _ok(client.query_points(name, **_query_args(body)))

    @app.post("/collections/{name}/points/query/batch")
    async def query_batch(name: str, body: models.QueryRequestBatch) -> JSONResponse:
        return _ok(client.query_batch_points(name, requests=body.searches))

    @app.post("/collections/{name}/points/query/groups")
    async def query_groups(name: str, body: models.QueryGroupsRequest) -> JSONResponse:
        args = _query_args(body)
        return _ok(client.query_points_groups(name, group_by=body.group_by, group_size=body.group_size or 1, **args))

    add_snapshot_routes(app, client, path, _ok, _error)  # collection snapshots (qdrant_standin_snapshots.py)
    return app


class QdrantStandin(_ManagedProcess):
    """The stand-in as its own process (so several service processes can share it): `with QdrantStandin() as q`."""

    name = "qdrant-standin"

    def __init__(self, path: str | None = None) -> None:
        super().__init__()
        self.port = free_port()
        self.path = path or str(self._tmp / "store")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        argv = [sys.executable, "-m", "tests.support.qdrant_standin", "--port", str(self.port), "--path", self.path]
        self._spawn(argv, env={**os.environ, "PYTHONPATH": str(ROOT)})
        wait_http(f"{self.url}/", timeout=60, proc=self._proc)


def main(argv: Sequence[str] | None = None) -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", default=":memory:")
    args = parser.parse_args(argv)
    started = time.monotonic()
    app = create_app(args.path)
    print(f"qdrant stand-in ready in {time.monotonic() - started:.1f}s", flush=True)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
