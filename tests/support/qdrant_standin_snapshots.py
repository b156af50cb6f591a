"""TEST-ONLY: the collection-snapshot part of Qdrant's REST API for the stand-in (qdrant_standin.py).

Endpoints as Qdrant has them and qdrant-client / the gateway call them: create (`POST /collections/{name}/snapshots`),
list, download (`GET .../snapshots/{file}`), delete, upload-recover (`POST .../snapshots/upload?priority=snapshot`,
multipart field `snapshot`). The file itself is the stand-in's own (Qdrant's is a tar of its segments, which local
mode has not): gzip'd JSON lines, the collection's config first, then every point with its vectors and payload.
The gateway treats it as opaque bytes, as it treats a real server's. Requests run one at a time on the stand-in's
event loop, so a snapshot is the collection at one moment, as on a server.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse
from qdrant_client import QdrantClient, models

_BATCH = 256


def add_snapshot_routes(app: FastAPI, client: QdrantClient, path: str, ok: Any, error: Any) -> None:
    root = Path(tempfile.mkdtemp(prefix="standin-snapshots-")) if path == ":memory:" else Path(f"{path}.snapshots")

    def folder(name: str) -> Path:
        return root / name

    def describe(file: Path) -> dict[str, Any]:
        created = datetime.fromtimestamp(file.stat().st_mtime, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        digest = hashlib.sha256(file.read_bytes()).hexdigest()
        return {"name": file.name, "creation_time": created, "size": file.stat().st_size, "checksum": digest}

    @app.post("/collections/{name}/snapshots")
    async def create(name: str) -> JSONResponse:
        if not client.collection_exists(name):
            return error(404, f"Not found: Collection `{name}` doesn't exist!")
        info = client.get_collection(name)
        head = {
            "standin_snapshot": 1,
            "vectors": info.config.params.vectors.model_dump(mode="json"),
            "sparse_vectors": {
                k: v.model_dump(mode="json") for k, v in (info.config.params.sparse_vectors or {}).items()
            },
            "metadata": info.config.metadata,
        }
        folder(name).mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y-%m-%d-%H-%M-%S")
        file = folder(name) / f"{name}-{stamp}-{uuid.uuid4().hex[:6]}.snapshot"
        with gzip.open(file, "wt") as out:
            out.write(json.dumps(head) + "\n")
            offset = None
            while True:
                records, offset = client.scroll(name, limit=_BATCH, offset=offset, with_payload=True, with_vectors=True)
                for r in records:
                    out.write(json.dumps({"id": r.id, "vector": _jsonable(r.vector), "payload": r.payload}) + "\n")
                if offset is None:
                    break
        return ok(describe(file))

    @app.get("/collections/{name}/snapshots")
    async def listed(name: str) -> JSONResponse:
        return ok([describe(f) for f in sorted(folder(name).glob("*.snapshot"))])

    @app.get("/collections/{name}/snapshots/{file}")
    async def download(name: str, file: str) -> Any:
        target = folder(name) / file
        if "/" in file or not target.is_file():
            return error(404, f"Not found: Snapshot {file} not found")
        return FileResponse(target, media_type="application/octet-stream")

    @app.delete("/collections/{name}/snapshots/{file}")
    async def delete(name: str, file: str) -> JSONResponse:
        target = folder(name) / file
        if "/" in file or not target.is_file():
            return error(404, f"Not found: Snapshot {file} not found")
        target.unlink()
        return ok(True)

    @app.post("/collections/{name}/snapshots/upload")
    async def upload(name: str, request: Request) -> JSONResponse:
        data = _multipart_file(await request.body(), request.headers.get("content-type", ""))
        if data is None:
            return error(400, "Bad request: no snapshot file in the multipart body")
        try:
            lines = gzip.decompress(data).decode().splitlines()
            head = json.loads(lines[0])
            assert head.get("standin_snapshot") == 1
            points = [models.PointStruct.model_validate(json.loads(line)) for line in lines[1:]]
        except Exception as exc:
            return error(400, f"Bad request: the snapshot cannot be read: {exc!r}"[:300])
        if client.collection_exists(name):  # priority=snapshot: the snapshot's data replaces the collection's
            client.delete_collection(name)
        client.create_collection(
            name,
            vectors_config=models.VectorParams.model_validate(head["vectors"]),
            sparse_vectors_config={
                k: models.SparseVectorParams.model_validate(v) for k, v in head["sparse_vectors"].items()
            }
            or None,
            metadata=head["metadata"],
        )
        for i in range(0, len(points), _BATCH):
            client.upsert(name, points=points[i : i + _BATCH], wait=True)
        return ok(True)


def _jsonable(vector: Any) -> Any:
    if isinstance(vector, dict):
        return {k: v.model_dump(mode="json") if isinstance(v, models.SparseVector) else v for k, v in vector.items()}
    return vector


def _multipart_file(body: bytes, content_type: str) -> bytes | None:
    """The first part's bytes of a multipart/form-data body (the stand-in has no python-multipart)."""
    marker = "boundary="
    if marker not in content_type:
        return None
    boundary = b"--" + content_type.split(marker, 1)[1].split(";")[0].strip().strip('"').encode()
    start = body.find(boundary)
    head_end = body.find(b"\r\n\r\n", start)
    end = body.find(b"\r\n" + boundary, head_end)
    if start < 0 or head_end < 0 or end < 0:
        return None
    return body[head_end + 4 : end]
