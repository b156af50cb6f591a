"""Snapshots and restore on real stores: Qdrant Edge shards in a temporary folder, and a Qdrant server through the
test stand-in (tests/support/qdrant_standin.py, which serves Qdrant's snapshot endpoints)."""

from __future__ import annotations

import asyncio
import tarfile
from collections.abc import Awaitable, Callable
from pathlib import Path

import numpy as np
import pytest

from service.clients.sparse import bm25
from service.model.collections import ChunkingParams
from service.model.documents import StoredDocument
from service.model.errors import CollectionExists
from service.snapshots.library import SnapshotLibrary
from service.store.base import SearchQuery, Store
from service.store.edge.store import EdgeStore
from service.store.qdrant import VectorStore
from service.store.snapshot_backends import snapshot_backend
from service.store.snapshot_format import MANIFEST, SnapshotInvalid, read_manifest
from tests.support.qdrant_standin import QdrantStandin

DIM = 8
POLICY = {"enabled": False, "n": 2}


def documents(n: int, start: int = 0, seed: int = 0) -> tuple[list[StoredDocument], np.ndarray]:
    rng = np.random.default_rng(seed + start)
    vectors = rng.standard_normal((n, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    docs = [
        StoredDocument(
            id=f"d{i}",
            text=f"document number {i} about topic {i % 5}",
            title=f"title {i}",
            metadata={"lang": ["en", "de"][i % 2], "year": 2000 + i % 4},
        )
        for i in range(start, start + n)
    ]
    return docs, vectors


def queries(k: int = 5) -> list[SearchQuery]:
    rng = np.random.default_rng(99)
    found = []
    for i in range(k):
        v = rng.standard_normal(DIM).astype(np.float32)
        found.append(SearchQuery(v / np.linalg.norm(v), 10, {"lang": "en"} if i % 2 else None))
    return found


async def results(store: Store, name: str) -> list[list[tuple[str, float]]]:
    hits = await store.search_batch(name, queries())
    return [[(h.document.id, round(h.score, 5)) for h in q] for q in hits]


@pytest.fixture(scope="module")
def standin(tmp_path_factory: pytest.TempPathFactory):
    with QdrantStandin(str(tmp_path_factory.mktemp("standin") / "store")) as server:
        yield server


Scenario = Callable[[Store, SnapshotLibrary], Awaitable[None]]


@pytest.fixture(params=["edge", "server"])
def on_store(request, tmp_path: Path) -> Callable[[Scenario], None]:
    """Runs a scenario on a fresh store of the backend and its snapshot library."""
    url = request.getfixturevalue("standin").url if request.param == "server" else None

    async def run(scenario: Scenario) -> None:
        if url is None:
            store: Store = EdgeStore(tmp_path / "qdrant")
        else:
            store = VectorStore.connect(url=url, api_key=None, path="", timeout_s=30)
        backend = snapshot_backend(store, url=url, api_key=None)
        assert backend is not None
        try:
            await scenario(store, SnapshotLibrary(tmp_path / "snapshots", backend))
        finally:
            for name in await store.names():
                await store.drop(name)
            await store.aclose()

    return lambda scenario: asyncio.run(run(scenario))


async def _make(store: Store, name: str, n: int, *, chunking: ChunkingParams | None = None) -> None:
    await store.create(name, DIM, embedder="test-embedder", profile="hyde", chunking=chunking, policy=POLICY)
    docs, vectors = documents(n)
    await store.upsert(name, docs, vectors)


async def _restore(library: SnapshotLibrary, name: str, archive: Path, *, replace: bool = False) -> int:
    manifest = await library.check(archive)
    stages: list[str] = []
    count = await library.require_backend().restore(
        name, archive, manifest, replace=replace, progress=lambda stage, _: stages.append(stage)
    )
    assert stages, "the restore reported no progress"
    return count


def test_a_snapshot_brings_back_the_collection_as_it_was_after_it_was_deleted(on_store):
    on_store(_a_snapshot_brings_back_the_collection_as_it_was_after_it_was_deleted)


async def _a_snapshot_brings_back_the_collection_as_it_was_after_it_was_deleted(
    store: Store, library: SnapshotLibrary
) -> None:
    await _make(store, "papers", 60)
    before = await results(store, "papers")
    info = await store.info("papers")

    snapshot = await library.create("papers")
    assert snapshot.count == 60 and snapshot.size_bytes == library.path(snapshot).stat().st_size
    manifest = read_manifest(library.path(snapshot))
    assert manifest.fields["embedder"] == "test-embedder" and manifest.fields["policy"] == POLICY
    assert manifest.fields["sparse"] is True and manifest.fields["dimension"] == DIM

    more, vectors = documents(20, start=60)
    await store.upsert("papers", more, vectors)  # after the snapshot: not in it
    await store.drop("papers")
    assert [s.id for s in await library.list("papers")] == [snapshot.id]  # it outlives its collection

    assert await _restore(library, "papers", library.path(snapshot)) == 60
    assert await store.count("papers") == 60
    assert await results(store, "papers") == before
    restored = await store.info("papers")
    assert (restored.sparse, restored.embedder, restored.profile) == (info.sparse, info.embedder, info.profile)
    assert await store.policy("papers") == POLICY
    assert (await store.get("papers", "d7")) == documents(60)[0][7]
    assert await store.get("papers", "d65") is None
    # The BM25 side came back too: a sparse query finds by terms.
    sparse_query = SearchQuery(queries(1)[0].vector, 3, retrieval="sparse", sparse=bm25().query(["number 17"]))
    assert (await store.search_batch("papers", [sparse_query]))[0][0].document.id == "d17"


def test_restore_into_an_existing_name_needs_replace(on_store):
    on_store(_restore_into_an_existing_name_needs_replace)


async def _restore_into_an_existing_name_needs_replace(store: Store, library: SnapshotLibrary) -> None:
    await _make(store, "live", 30)
    snapshot = await library.create("live")
    more, vectors = documents(10, start=30)
    await store.upsert("live", more, vectors)
    with pytest.raises(CollectionExists):
        await _restore(library, "live", library.path(snapshot))
    assert await store.count("live") == 40  # untouched
    assert await _restore(library, "live", library.path(snapshot), replace=True) == 30
    assert await store.count("live") == 30


def test_a_chunked_collection_keeps_its_chunking(on_store):
    on_store(_a_chunked_collection_keeps_its_chunking)


async def _a_chunked_collection_keeps_its_chunking(store: Store, library: SnapshotLibrary) -> None:
    chunking = ChunkingParams(max_tokens=32, overlap=4)
    await store.create("chunked", DIM, embedder="test-embedder", profile="hyde", chunking=chunking)
    docs, vectors = documents(12)
    chunks = [StoredDocument(d.id, d.text if c == 0 else "", d.title, d.metadata, c) for d in docs for c in range(3)]
    await store.upsert("chunked", chunks, np.repeat(vectors, 3, axis=0))
    before = await results(store, "chunked")
    snapshot = await library.create("chunked")
    assert snapshot.count == 12
    await store.drop("chunked")
    assert await _restore(library, "chunked", library.path(snapshot)) == 12
    assert await store.chunking("chunked") == chunking
    assert await results(store, "chunked") == before


def test_a_snapshot_taken_while_writes_continue_holds_whole_writes_only(on_store):
    on_store(_a_snapshot_taken_while_writes_continue_holds_whole_writes_only)


async def _a_snapshot_taken_while_writes_continue_holds_whole_writes_only(
    store: Store, library: SnapshotLibrary
) -> None:
    await store.create("busy", DIM, embedder="test-embedder", profile="hyde")
    batch = 7
    stop = asyncio.Event()

    async def write() -> int:
        start = 0
        while not stop.is_set():
            docs, vectors = documents(batch, start=start)
            await store.write_batch("busy", docs, vectors)
            start += batch
        return start

    writer = asyncio.create_task(write())
    while await store.count("busy") < 5 * batch:
        await asyncio.sleep(0.01)
    snapshot = await library.create("busy")
    await asyncio.sleep(0.2)
    stop.set()
    written = await writer
    assert 0 < snapshot.count < written, "the snapshot was not taken while writes went on"
    await store.drop("busy")
    restored = await _restore(library, "busy", library.path(snapshot))
    assert restored == await store.count("busy")
    if read_manifest(library.path(snapshot)).fields.get("count_exact", True):
        assert restored == snapshot.count  # Edge counts inside the snapshot's step
    else:  # a server's count is read just after its snapshot: writes may have landed between
        assert restored < snapshot.count
    assert restored % batch == 0
    # Exactly the first writes: every document of them, none after.
    assert await store.get("busy", f"d{restored - 1}") is not None
    assert await store.get("busy", f"d{restored}") is None


def _corrupt(source: Path, target: Path) -> None:
    """One byte flipped in the middle of the first data member."""
    with tarfile.open(source) as tar:
        member = next(m for m in tar.getmembers() if m.isfile() and m.name != MANIFEST and m.size > 64)
        offset = member.offset_data + member.size // 2
    raw = bytearray(source.read_bytes())
    raw[offset] ^= 0xFF
    target.write_bytes(bytes(raw))


def test_a_corrupted_or_truncated_file_is_refused_and_changes_nothing(on_store, tmp_path: Path):
    on_store(lambda store, library: _a_corrupted_or_truncated_file_is_refused(store, library, tmp_path))


async def _a_corrupted_or_truncated_file_is_refused(store: Store, library: SnapshotLibrary, tmp_path: Path) -> None:
    await _make(store, "keep", 25)
    snapshot = await library.create("keep")
    source = library.path(snapshot)
    corrupted, truncated, garbage = tmp_path / "corrupted.tar", tmp_path / "truncated.tar", tmp_path / "garbage.tar"
    _corrupt(source, corrupted)
    truncated.write_bytes(source.read_bytes()[: source.stat().st_size // 2])
    garbage.write_bytes(b"not a snapshot at all" * 100)
    more, vectors = documents(5, start=25)
    await store.upsert("keep", more, vectors)
    for bad in (corrupted, truncated, garbage):
        with pytest.raises(SnapshotInvalid):
            await _restore(library, "keep", bad, replace=True)
        with pytest.raises(SnapshotInvalid):
            await _restore(library, "other", bad)
    assert await store.count("keep") == 30
    assert await store.names() == ["keep"]
    if isinstance(store, EdgeStore):  # no staging folder left behind
        assert [p.name for p in (store._root).iterdir()] == ["keep"]


def test_snapshots_are_deleted_explicitly(on_store):
    on_store(_snapshots_are_deleted_explicitly)


async def _snapshots_are_deleted_explicitly(store: Store, library: SnapshotLibrary) -> None:
    await _make(store, "gone", 5)
    first = await library.create("gone")
    second = await library.create("gone")
    assert [s.id for s in await library.list("gone")] == [first.id, second.id]
    await library.delete("gone", first.id)
    assert [s.id for s in await library.list("gone")] == [second.id]
    assert not library.path(first).exists()
