"""Snapshots of a collection and its restore (docs/api.md "Snapshots"). Scope admin; the path parameter is the
collection's `name`, so a key limited to some collections reaches only their snapshots.

Snapshots name real collections (never an alias): a restore writes the name it is given."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator

from fastapi import APIRouter, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse
from pydantic import ValidationError

from service.api.auth import require
from service.api.mappers import job_out
from service.api.problems import Problem
from service.api.protocol import JobOut, is_collection_name
from service.api.protocol_snapshots import RestoreRequest, SnapshotList, SnapshotOut
from service.model.errors import CollectionExists
from service.snapshots.library import (
    SNAPSHOT_ID,
    Snapshot,
    SnapshotLibrary,
    SnapshotNotFound,
    SnapshotsUnsupported,
    SnapshotTooLarge,
)
from service.snapshots.restore_jobs import RestoreJobs
from service.store.snapshot_format import SnapshotInvalid

router = APIRouter(prefix="/v1/collections/{name}", tags=["snapshots"])
# The restore route takes a streamed snapshot file: the request-body limit (MAX_BODY_BYTES) does not apply to it,
# MAX_UPLOAD_BYTES does (counted here as it streams).
RESTORE_PATH = r"^/v1/collections/[^/]+/restore/?$"
_JSON_BODY_MAX = 64 * 1024


def _library(request: Request) -> SnapshotLibrary:
    return request.app.state.services.snapshots


def _restores(request: Request) -> RestoreJobs:
    return request.app.state.services.restores


def _checked(name: str) -> str:
    if not is_collection_name(name):
        raise Problem(404, f"Collection '{name[:80]}' does not exist.")
    return name


@contextlib.contextmanager
def _problems() -> Iterator[None]:
    try:
        yield
    except SnapshotNotFound as exc:
        raise Problem(404, f"Snapshot '{str(exc)[:80]}' does not exist for this collection.") from None
    except SnapshotInvalid as exc:
        raise Problem(422, f"The snapshot is refused, nothing was changed: {exc}") from None
    except SnapshotsUnsupported as exc:
        raise Problem(409, f"Snapshots are not available here: {exc}.") from None
    except SnapshotTooLarge as exc:
        raise Problem(413, f"A snapshot upload may carry {exc} bytes (MAX_UPLOAD_BYTES).") from None


def _out(snapshot: Snapshot) -> SnapshotOut:
    return SnapshotOut(**snapshot.public())


def _snapshot_id(snapshot_id: str) -> str:
    if not SNAPSHOT_ID.fullmatch(snapshot_id):
        raise Problem(404, f"Snapshot '{snapshot_id[:80]}' does not exist for this collection.")
    return snapshot_id


@router.post("/snapshots", status_code=201, response_model=SnapshotOut, dependencies=[require("admin")])
async def create_snapshot(name: str, request: Request) -> SnapshotOut:
    """A consistent copy of the collection now (writes after this moment are not in it); 201 once it is on disk."""
    with _problems():
        return _out(await _library(request).create(_checked(name)))


@router.get("/snapshots", response_model=SnapshotList, dependencies=[require("admin")])
async def list_snapshots(name: str, request: Request) -> SnapshotList:
    """The collection's snapshots, oldest first; listed after the collection is deleted too."""
    with _problems():
        snapshots = await _library(request).list(_checked(name))
    return SnapshotList(snapshots=[_out(s) for s in snapshots])


@router.get(
    "/snapshots/{snapshot_id}",
    response_class=FileResponse,
    responses={200: {"content": {"application/x-tar": {}}, "description": "the snapshot file"}},
    dependencies=[require("admin")],
)
async def download_snapshot(name: str, snapshot_id: str, request: Request) -> FileResponse:
    """The snapshot file (a tar: manifest.json, then data/...), streamed."""
    library = _library(request)
    with _problems():
        snapshot = await library.get(_checked(name), _snapshot_id(snapshot_id))
    return FileResponse(
        library.path(snapshot), media_type="application/x-tar", filename=f"{snapshot.collection}-{snapshot.id}.tar"
    )


@router.delete("/snapshots/{snapshot_id}", status_code=204, dependencies=[require("admin")])
async def delete_snapshot(name: str, snapshot_id: str, request: Request) -> Response:
    with _problems():
        await _library(request).delete(_checked(name), _snapshot_id(snapshot_id))
    return Response(status_code=204)


@router.post(
    "/restore",
    status_code=202,
    response_model=JobOut,
    dependencies=[require("admin")],
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": RestoreRequest.model_json_schema()},
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
            },
        }
    },
)
async def restore(name: str, request: Request, replace: bool = False) -> Response:
    """One of this collection's snapshots by id (JSON `{"snapshot": id, "replace"?}`), or a snapshot file as the
    body (application/octet-stream, `?replace=true`). The file is verified whole before the 202: a corrupted or
    truncated one is a 422 and nothing changes. 409 when the collection exists and replace is not asked."""
    name = _checked(name)
    library, restores = _library(request), _restores(request)
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    with _problems():
        library.require_backend()
        if media_type == "application/octet-stream":
            archive = await library.receive(request.stream(), request.app.state.settings.max_upload_bytes)
            source, uploaded = "upload", True
        elif media_type == "application/json" or media_type.endswith("+json"):
            body = await _json_body(request)
            replace = body.replace
            archive = library.path(await library.get(name, body.snapshot))
            source, uploaded = body.snapshot, False
        else:
            raise Problem(
                415, 'Send {"snapshot": id} as application/json, or a snapshot file as application/octet-stream.'
            )
        try:
            manifest = await library.check(archive)
            services = request.app.state.services
            aliases = getattr(services, "aliases", None)
            if aliases is not None and name in await aliases.table(fresh=True):
                raise Problem(409, f"'{name}' is an alias: a collection may not take its name.")
            if not replace and await services.store.exists(name):
                raise CollectionExists(name)
            job = await restores.start(name, archive, manifest, replace=replace, source=source, delete_after=uploaded)
        except BaseException:
            if uploaded:
                archive.unlink(missing_ok=True)
            raise
    return Response(
        job_out(job).model_dump_json(),
        status_code=202,
        media_type="application/json",
        headers={"Location": f"/v1/jobs/{job.job_id}"},
    )


async def _json_body(request: Request) -> RestoreRequest:
    raw = b""
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > _JSON_BODY_MAX:
            raise Problem(413, f"A restore request's JSON body may carry {_JSON_BODY_MAX} bytes.")
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError):
        raise Problem(400, "The request body is not valid JSON.") from None
    try:
        return RestoreRequest.model_validate(value)
    except ValidationError as exc:
        errors = [{**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_url=False, include_context=False)]
        raise RequestValidationError(errors) from None
