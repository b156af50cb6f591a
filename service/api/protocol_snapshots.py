"""Schemas of the snapshot routes (docs/api.md "Snapshots")."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

SNAPSHOT_ID_PATTERN = r"^[0-9]{8}T[0-9]{9}Z-[0-9a-f]{8}$"


class SnapshotOut(BaseModel):
    snapshot: str  # its id
    collection: str
    created_at: str
    count: int  # documents in it
    size_bytes: int  # of the snapshot file
    backend: str  # "edge" or "qdrant": a snapshot is restored on the backend it came from


class SnapshotList(BaseModel):
    snapshots: list[SnapshotOut]


class RestoreRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    snapshot: str = Field(pattern=SNAPSHOT_ID_PATTERN)  # one of this collection's snapshots
    replace: bool = False  # restore over an existing collection of that name (else 409)


class RestoreProgress(BaseModel):
    """A restore job's progress (`kind: "restore"` jobs only)."""

    stage: str  # queued, unpacking / uploading, opening, swapping, done
    bytes: int  # data bytes to restore
    done_bytes: int
    snapshot: str  # the snapshot's id, or "upload"
    snapshot_count: int  # documents in the snapshot
    replace: bool
    count: int | None = None  # documents in the restored collection, once done
