"""Snapshots of collections on a Qdrant server: Qdrant's own collection snapshot API, inside our snapshot file.

`take` asks Qdrant for a collection snapshot (`POST /collections/{name}/snapshots`, qdrant-client's
`create_snapshot`): Qdrant makes it consistent itself (its segments at one moment, writes after it go to a
temporary segment that is not in it). The gateway downloads it (`GET /collections/{name}/snapshots/{file}`),
checks Qdrant's sha256, keeps it as data/qdrant.snapshot in our archive (in SNAPSHOT_PATH, so that it outlives the
collection on any Qdrant version) and deletes it on the server. Restore uploads it back
(`POST /collections/{name}/snapshots/upload?priority=snapshot`): vectors, sparse vectors, payload indexes and the
collection's metadata (chunking, think policy) come back as Qdrant stored them, nothing is embedded again.

Qdrant cannot rename a collection, so a restore writes under its own name; a restore into a new name that fails
drops what Qdrant made of it. The manifest's `count` is counted right before and right after the snapshot; when
writes landed in between the two differ, and `count_exact` is false (the restore job reports the exact count).
"""

from __future__ import annotations

import contextlib
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx

from service.model.errors import CollectionExists, StoreRejected, StoreUnavailable
from service.store.qdrant import VectorStore
from service.store.snapshot_format import DATA, Manifest, SnapshotInvalid, sha256_file

BACKEND = "qdrant"
MEMBER = "qdrant.snapshot"
_TIMEOUT = httpx.Timeout(30.0, read=600.0, write=600.0)


class ServerSnapshots:
    backend = BACKEND

    def __init__(self, store: VectorStore, url: str, api_key: str | None) -> None:
        self._store = store
        self._url = url.rstrip("/")
        self._headers = {"api-key": api_key} if api_key else {}

    async def take(self, name: str, dest: Path) -> dict[str, Any]:
        store = self._store
        info = await store.info(name)  # 404 for an unknown collection
        policy = await store.policy(name)
        async with store._errors(name):
            before = await store.count(name)
            description = await store._client.create_snapshot(name, wait=True)
            after = await store.count(name)
        if description is None:
            raise StoreUnavailable("Qdrant made no snapshot")
        target = dest / DATA / MEMBER
        target.parent.mkdir(parents=True)
        try:
            async with (
                self._http() as http,
                http.stream("GET", f"/collections/{name}/snapshots/{description.name}") as r,
            ):
                _raise_for(r)
                with open(target, "wb") as out:
                    async for block in r.aiter_bytes(1 << 20):
                        out.write(block)
        finally:
            with contextlib.suppress(Exception):
                async with store._errors(name):
                    await store._client.delete_snapshot(name, description.name, wait=True)
        if description.checksum and sha256_file(target) != description.checksum:
            raise StoreUnavailable("the snapshot downloaded from Qdrant does not match its checksum")
        return {
            "collection": name,
            "backend": BACKEND,
            "count": after,
            "count_exact": before == after,
            "dimension": info.dimension,
            "distance": info.distance,
            "embedder": info.embedder,
            "profile": info.profile,
            "sparse": info.sparse,
            "chunking": info.chunking.as_meta() if info.chunking else None,
            "policy": policy,
            "qdrant_snapshot": description.name,
        }

    async def restore(
        self, name: str, archive: Path, manifest: Manifest, *, replace: bool, progress: Callable[[str, int], None]
    ) -> int:
        """Uploads the Qdrant snapshot from inside the verified archive (read in place, not unpacked)."""
        store = self._store
        existed = await store.exists(name)
        if existed and not replace:
            raise CollectionExists(name)
        member_name = f"{DATA}/{MEMBER}"
        if member_name not in manifest.files:
            raise SnapshotInvalid("the snapshot holds no Qdrant collection snapshot (data/qdrant.snapshot)")
        store._layouts.pop(name, None)  # chunking and sparse side are the snapshot's from now on
        try:
            with tarfile.open(archive, mode="r:*") as tar:
                member = tar.getmember(member_name)
                stream = tar.extractfile(member)
                assert stream is not None
                await self._upload(name, _Counting(stream, lambda n: progress("uploading", n)))
        except BaseException:
            if not existed:  # what Qdrant made of a failed restore into a new name
                with contextlib.suppress(Exception):
                    await store.drop(name)
            raise
        finally:
            store._layouts.pop(name, None)
        return await store.count(name)

    async def _upload(self, name: str, stream: _Counting) -> None:
        params = {"wait": "true", "priority": "snapshot"}
        files = {"snapshot": (f"{name}.snapshot", stream, "application/octet-stream")}
        async with self._http() as http:
            try:
                r = await http.post(f"/collections/{name}/snapshots/upload", params=params, files=files)
            except httpx.HTTPError as exc:
                raise StoreUnavailable(f"Qdrant unreachable: {exc!r}") from exc
            _raise_for(r)

    def _http(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self._url, headers=self._headers, timeout=_TIMEOUT)


def _raise_for(r: httpx.Response) -> None:
    if r.status_code < 400:
        return
    if 400 <= r.status_code < 500 and r.status_code not in (408, 429):
        raise StoreRejected(f"Qdrant refused the snapshot ({r.status_code})")
    raise StoreUnavailable(f"Qdrant answered {r.status_code}")


class _Counting:
    """A file-like reader that reports how much has been read (httpx streams it as the multipart part)."""

    def __init__(self, stream: Any, report: Callable[[int], None]) -> None:
        self._stream = stream
        self._report = report
        self._done = 0

    def read(self, size: int = -1) -> bytes:
        block = self._stream.read(size)
        self._done += len(block)
        self._report(self._done)
        return block

    def __iter__(self) -> Iterator[bytes]:
        while block := self.read(1 << 20):
            yield block
