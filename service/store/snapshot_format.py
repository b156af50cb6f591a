"""The snapshot file: one tar, the same on both backends, verified whole before a restore touches anything.

    manifest.json        first member: {"format": "thinksearch-snapshot", "version": 1, "snapshot", "collection",
                         "created_at", "backend" ("edge" | "qdrant"), "count", "dimension", "distance",
                         "embedder", "profile", "sparse", "chunking", "policy", "hnsw", "files"}
                         `files`: every data member, {"data/...": {"size": n, "sha256": hex}}
    data/...             the backend's own files: on Edge the collection folder (data/meta.json, data/shard/...:
                         segments with their vector and payload indexes, the WAL); on a Qdrant server the
                         server's own collection snapshot (data/qdrant.snapshot)

Plain tar (a gzip-compressed one is read too). A member not in `files`, a file of `files` missing, a size or a
checksum that differs, a path outside data/, a link: the file is refused (SnapshotInvalid) before anything changes.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import tarfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO, Protocol

FORMAT = "thinksearch-snapshot"
VERSION = 1
MANIFEST = "manifest.json"
DATA = "data"
_CHUNK = 1 << 20
_MANIFEST_MAX = 16 << 20
_LENGTH_MAX = 1 << 40  # a file's size past its data (a preallocated hole), at most


class SnapshotInvalid(Exception):
    """A snapshot file that is not one, is truncated, or whose contents do not match its manifest."""


@dataclass(frozen=True)
class Manifest:
    fields: dict[str, Any]

    @property
    def collection(self) -> str:
        return str(self.fields["collection"])

    @property
    def backend(self) -> str:
        return str(self.fields["backend"])

    @property
    def count(self) -> int:
        return int(self.fields["count"])

    @property
    def files(self) -> dict[str, dict[str, Any]]:
        return self.fields["files"]

    def data_bytes(self) -> int:
        return sum(int(f["size"]) for f in self.files.values())


class SnapshotBackend(Protocol):
    """A store's snapshots: `take` copies a collection consistently into `dest` (a folder: the files go under
    dest/data/) and returns the manifest's fields but `files`; `restore` brings a verified archive back as `name`."""

    backend: str

    async def take(self, name: str, dest: Path) -> dict[str, Any]: ...

    async def restore(
        self, name: str, archive: Path, manifest: Manifest, *, replace: bool, progress: Callable[[str, int], None]
    ) -> int:
        """Returns the restored collection's count; `progress(stage, bytes done)`."""


def sha256_file(path: Path, length: int | None = None) -> str:
    """The sha256 of the file (of its first `length` bytes)."""
    digest = hashlib.sha256()
    left = path.stat().st_size if length is None else length
    with open(path, "rb") as f:
        while left > 0 and (block := f.read(min(_CHUNK, left))):
            digest.update(block)
            left -= len(block)
    return digest.hexdigest()


def content_length(path: Path) -> int:
    """Where the file's data ends: the engine preallocates files (WAL segments, mmap'd storages) as holes of
    zeros far past their data, which an archive need not carry. The end of the last data extent (SEEK_DATA /
    SEEK_HOLE); the whole size where the file system cannot tell."""
    size = path.stat().st_size
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return size
    try:
        end, position = 0, 0
        while position < size:
            start = os.lseek(fd, position, os.SEEK_DATA)
            position = os.lseek(fd, start, os.SEEK_HOLE)
            end = position
        return min(end, size)
    except OSError as exc:  # ENXIO: no data past `position`; anything else: not supported here
        return end if exc.errno == errno.ENXIO else size
    finally:
        os.close(fd)


def copy_sparse(source: str | Path, target: str | Path) -> None:
    """A file copied up to where its data ends, its size kept (the rest a hole): a shutil.copytree
    `copy_function` that does not write out the engine's preallocated zeros (a plain copy writes them all)."""
    length, size = content_length(Path(source)), os.stat(source).st_size
    with open(source, "rb") as src, open(target, "wb") as dst:
        left = length
        while left > 0:
            sent = os.sendfile(dst.fileno(), src.fileno(), None, min(left, 1 << 26))
            if sent == 0:
                break
            left -= sent
        dst.truncate(size)


def _data_files(root: Path) -> Iterator[tuple[str, Path]]:
    for path in sorted(root.rglob("*")):
        if path.is_symlink():
            raise ValueError(f"a link in a snapshot's data: {path}")
        if path.is_file():
            yield PurePosixPath(DATA, path.relative_to(root).as_posix()).as_posix(), path


def write_archive(target: Path, fields: dict[str, Any], data_root: Path) -> Manifest:
    """The tar of `data_root`'s files (as data/...) behind the manifest; fsynced. Returns the manifest written.

    Each file's member holds its data up to `size`; `length` is the file's own size, the rest zeros (restored as
    a hole)."""
    files: dict[str, dict[str, Any]] = {}
    for name, path in _data_files(data_root):
        size = content_length(path)
        files[name] = {"size": size, "length": path.stat().st_size, "sha256": sha256_file(path, size)}
    manifest = Manifest({"format": FORMAT, "version": VERSION, **fields, "files": files})
    encoded = json.dumps(manifest.fields, indent=1, sort_keys=True).encode()
    with open(target, "wb") as raw, tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo(MANIFEST)
        info.size = len(encoded)
        info.mtime = 0
        tar.addfile(info, io.BytesIO(encoded))
        for name, path in _data_files(data_root):
            member = tar.gettarinfo(path, arcname=name)
            member.size = files[name]["size"]
            with open(path, "rb") as f:
                tar.addfile(member, f)
        tar.close()
        raw.flush()
        os.fsync(raw.fileno())
    return manifest


def _safe_name(name: str) -> bool:
    path = PurePosixPath(name)
    return not path.is_absolute() and ".." not in path.parts and path.parts[:1] == (DATA,) and len(path.parts) > 1


def _read_manifest(tar: tarfile.TarFile) -> Manifest:
    first = tar.next()
    if first is None or first.name != MANIFEST or not first.isfile() or first.size > _MANIFEST_MAX:
        raise SnapshotInvalid("the file does not start with a snapshot manifest (manifest.json)")
    extracted = tar.extractfile(first)
    assert extracted is not None
    try:
        fields = json.loads(extracted.read())
    except (ValueError, UnicodeDecodeError) as exc:
        raise SnapshotInvalid(f"the manifest is not JSON: {exc}") from None
    if not isinstance(fields, dict) or fields.get("format") != FORMAT:
        raise SnapshotInvalid("the manifest is not a ThinkSearch snapshot's")
    if fields.get("version") != VERSION:
        raise SnapshotInvalid(f"snapshot format version {fields.get('version')!r}; this service reads {VERSION}")
    files = fields.get("files")
    if not isinstance(files, dict) or not all(isinstance(v, dict) and _safe_name(k) for k, v in files.items()):
        raise SnapshotInvalid("the manifest's file list is malformed")
    for key in ("collection", "backend", "count", "dimension", "embedder"):
        if key not in fields:
            raise SnapshotInvalid(f"the manifest has no '{key}'")
    return Manifest(fields)


def _members(path: Path, on_member: Callable[[tarfile.TarInfo, BinaryIO, int], None] | None = None) -> Manifest:
    """Reads the whole archive once, checking every member against the manifest; `on_member` may read each data
    file's stream (what it leaves unread is read for the checksum after it)."""
    try:
        with tarfile.open(path, mode="r:*") as tar:
            manifest = _read_manifest(tar)
            seen: set[str] = set()
            for index, member in enumerate(tar):
                if index == 0:  # the manifest, read above (iterating starts over from the first member)
                    continue
                if member.isdir():
                    if not _safe_name(member.name):
                        raise SnapshotInvalid(f"unexpected folder {member.name[:200]!r} in the snapshot")
                    continue
                expected = manifest.files.get(member.name)
                if not member.isfile() or expected is None or member.name in seen:
                    raise SnapshotInvalid(f"unexpected member {member.name[:200]!r} in the snapshot")
                if member.size != int(expected["size"]):
                    raise SnapshotInvalid(f"{member.name[:200]} has {member.size} bytes, the manifest says otherwise")
                stream = tar.extractfile(member)
                assert stream is not None
                hashing = _Hashing(stream)
                length = expected.get("length", member.size)
                if not isinstance(length, int) or not member.size <= length <= _LENGTH_MAX:
                    raise SnapshotInvalid(f"{member.name[:200]}: the manifest's length is malformed")
                if on_member is not None:
                    on_member(member, hashing, length)
                hashing.drain()
                if hashing.digest.hexdigest() != expected.get("sha256"):
                    raise SnapshotInvalid(f"{member.name[:200]}: checksum mismatch (the file is corrupted)")
                seen.add(member.name)
            missing = set(manifest.files) - seen
            if missing:
                raise SnapshotInvalid(f"the snapshot is truncated: {len(missing)} file(s) missing")
    except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        raise SnapshotInvalid(f"not a readable snapshot file (truncated or corrupted): {exc}"[:300]) from None
    return manifest


class _Hashing(io.RawIOBase):
    """A member's stream that hashes what is read from it."""

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream
        self.digest = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        block = self._stream.read(size)
        self.digest.update(block)
        return block

    def readinto(self, buffer: Any) -> int:
        block = self.read(len(buffer))
        buffer[: len(block)] = block
        return len(block)

    def drain(self) -> None:
        while self.read(_CHUNK):
            pass


def verify(path: Path) -> Manifest:
    """The archive's manifest, once every member has been checked against it; raises SnapshotInvalid."""
    return _members(path)


def extract(path: Path, dest: Path, progress: Callable[[int], None] | None = None) -> Manifest:
    """Verifies and unpacks the data members into `dest` (dest/<path under data/>); raises SnapshotInvalid (and
    `dest` is then to be thrown away by the caller)."""
    done = 0

    def write(member: tarfile.TarInfo, stream: BinaryIO, length: int) -> None:
        nonlocal done
        target = dest.joinpath(*PurePosixPath(member.name).parts[1:])
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            out = open(target, "wb")  # noqa: SIM115 (closed by the `with` below)
        except OSError as exc:
            raise _DestinationFailed(exc) from exc
        with out:
            while block := stream.read(_CHUNK):
                try:
                    out.write(block)
                except OSError as exc:  # the store's disk, not the file: not the snapshot's fault
                    raise _DestinationFailed(exc) from exc
                done += len(block)
                if progress is not None:
                    progress(done)
            if length > member.size:
                out.truncate(length)  # the zeros past the data, as a hole

    try:
        return _members(path, write)
    except _DestinationFailed as exc:
        raise exc.args[0] from None


class _DestinationFailed(Exception):
    """Writing the unpacked files failed (an OSError of the destination, carried past the archive's checks)."""


def read_manifest(path: Path) -> Manifest:
    """The manifest alone (no checksums): for listing."""
    try:
        with tarfile.open(path, mode="r:*") as tar:
            return _read_manifest(tar)
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise SnapshotInvalid(f"not a readable snapshot file: {exc}"[:300]) from None
