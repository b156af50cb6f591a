"""The snapshot library: snapshot files under SNAPSHOT_PATH, one folder per collection, kept after the collection.

    <SNAPSHOT_PATH>/<collection>/<id>.tar     the snapshot (service/store/snapshot_format.py)
    <SNAPSHOT_PATH>/<collection>/<id>.json    its description, written last: a snapshot is listed once complete
    <SNAPSHOT_PATH>/.work/                    snapshots being made, uploads being received (deleted after)

A snapshot is taken by the store's backend (a consistent copy), archived with its manifest and checksums off the
event loop, and renamed into place. Ids are `<UTC time to the ms>Z-<8 hex>`: sortable, unique across replicas.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from service.store.edge.disk import write_json
from service.store.snapshot_format import DATA, Manifest, SnapshotBackend, SnapshotInvalid, verify, write_archive

SNAPSHOT_ID = re.compile(r"[0-9]{8}T[0-9]{9}Z-[0-9a-f]{8}")
_WORK = ".work"


class SnapshotNotFound(Exception):
    pass


class SnapshotTooLarge(Exception):
    """An uploaded snapshot file over MAX_UPLOAD_BYTES: 413."""


class SnapshotsUnsupported(Exception):
    """The store has no snapshots (qdrant-client's embedded local mode)."""


@dataclass(frozen=True)
class Snapshot:
    id: str
    collection: str
    created_at: str
    count: int
    size_bytes: int
    backend: str

    def public(self) -> dict[str, Any]:
        return {
            "snapshot": self.id,
            "collection": self.collection,
            "created_at": self.created_at,
            "count": self.count,
            "size_bytes": self.size_bytes,
            "backend": self.backend,
        }


class SnapshotLibrary:
    def __init__(
        self,
        root: str | Path,
        backend: SnapshotBackend | None,
        *,
        dimension: Callable[[], Awaitable[int]] | None = None,
    ) -> None:
        self.root = Path(root)
        self.backend = backend
        self.dimension = dimension  # the embedder's (asked when needed): a snapshot of other vectors is refused

    # --- taking, listing, deleting ---

    async def create(self, collection: str) -> Snapshot:
        backend = self.require_backend()
        now = datetime.now(UTC)
        snapshot_id = f"{now:%Y%m%dT%H%M%S}{now.microsecond // 1000:03d}Z-{uuid.uuid4().hex[:8]}"
        work = self._work() / snapshot_id
        work.mkdir(parents=True)
        try:
            fields = await backend.take(collection, work)
            created = datetime.now(UTC).isoformat(timespec="milliseconds")
            fields = {**fields, "snapshot": snapshot_id, "created_at": created}
            return await asyncio.to_thread(self._archive, collection, snapshot_id, fields, work)
        finally:
            await asyncio.to_thread(shutil.rmtree, work, True)

    def _archive(self, collection: str, snapshot_id: str, fields: dict[str, Any], work: Path) -> Snapshot:
        folder = self.root / collection
        folder.mkdir(parents=True, exist_ok=True)
        partial = self._work() / f"{snapshot_id}.tar"
        write_archive(partial, fields, work / DATA)
        partial.replace(folder / f"{snapshot_id}.tar")
        snapshot = Snapshot(
            id=snapshot_id,
            collection=collection,
            created_at=str(fields["created_at"]),
            count=int(fields["count"]),
            size_bytes=(folder / f"{snapshot_id}.tar").stat().st_size,
            backend=str(fields["backend"]),
        )
        write_json(folder / f"{snapshot_id}.json", snapshot.public())
        return snapshot

    async def list(self, collection: str) -> list[Snapshot]:
        return await asyncio.to_thread(self._list, collection)

    def _list(self, collection: str) -> list[Snapshot]:
        found = []
        for path in sorted((self.root / collection).glob("*.json")):
            if SNAPSHOT_ID.fullmatch(path.stem) and (path.with_suffix(".tar")).is_file():
                try:
                    found.append(Snapshot(**_description(json.loads(path.read_text()))))
                except (ValueError, TypeError, KeyError):
                    continue  # a description half written by a crash: the snapshot is not listed
        return sorted(found, key=lambda snapshot: (snapshot.created_at, snapshot.id))

    async def get(self, collection: str, snapshot_id: str) -> Snapshot:
        for snapshot in await self.list(collection):
            if snapshot.id == snapshot_id:
                return snapshot
        raise SnapshotNotFound(snapshot_id)

    def path(self, snapshot: Snapshot) -> Path:
        return self.root / snapshot.collection / f"{snapshot.id}.tar"

    async def delete(self, collection: str, snapshot_id: str) -> None:
        snapshot = await self.get(collection, snapshot_id)
        description = self.path(snapshot).with_suffix(".json")
        description.unlink(missing_ok=True)  # unlisted first, then the file
        self.path(snapshot).unlink(missing_ok=True)

    # --- restoring ---

    async def receive(self, chunks: AsyncIterator[bytes], limit: int) -> Path:
        """An uploaded snapshot file, written under .work/ (the caller deletes it after the restore)."""
        target = self._work() / f"upload-{uuid.uuid4().hex}.tar"
        target.parent.mkdir(parents=True, exist_ok=True)
        size = 0
        try:
            with open(target, "wb") as out:
                async for chunk in chunks:
                    size += len(chunk)
                    if size > limit:
                        raise SnapshotTooLarge(limit)
                    out.write(chunk)
        except BaseException:
            target.unlink(missing_ok=True)
            raise
        return target

    async def check(self, archive: Path) -> Manifest:
        """The archive verified whole (manifest, every member's size and checksum) and fit for this service."""
        backend = self.require_backend()
        manifest = await asyncio.to_thread(verify, archive)
        if manifest.backend != backend.backend:
            raise SnapshotInvalid(
                f"the snapshot was taken on the {manifest.backend} backend; this service runs {backend.backend}: "
                "restore it on the backend it came from and copy with `thinksearch migrate`"
            )
        dimension = await self.dimension() if self.dimension is not None else None
        if dimension is not None and int(manifest.fields["dimension"]) != dimension:
            raise SnapshotInvalid(
                f"the snapshot holds {manifest.fields['dimension']}-dimensional vectors "
                f"({manifest.fields['embedder']}); this service embeds with {dimension} dimensions"
            )
        return manifest

    def require_backend(self) -> SnapshotBackend:
        if self.backend is None:
            raise SnapshotsUnsupported("snapshots need the Edge store or a Qdrant server (QDRANT_URL)")
        return self.backend

    def _work(self) -> Path:
        return self.root / _WORK

    def forget_work(self, older_than_s: float = 24 * 3600) -> None:
        """Leftovers of snapshots or uploads interrupted by a crash."""
        work = self._work()
        if not work.is_dir():
            return
        now = time.time()
        for path in work.iterdir():
            if now - path.stat().st_mtime > older_than_s:
                shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)


def _description(value: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": value["snapshot"],
        "collection": value["collection"],
        "created_at": value["created_at"],
        "count": int(value["count"]),
        "size_bytes": int(value["size_bytes"]),
        "backend": value["backend"],
    }
