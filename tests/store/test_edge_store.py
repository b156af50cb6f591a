"""The Qdrant Edge store on real shards in a temporary folder, against qdrant-client's local mode on the same data."""

from __future__ import annotations

import asyncio
import json
import shutil

import numpy as np
import pytest

from service.cli import main
from service.model.collections import HnswParams
from service.model.documents import StoredDocument
from service.model.errors import CollectionExists, CollectionNotFound, StoreRejected, VectorMismatch
from service.store.base import SearchQuery
from service.store.edge import indexing
from service.store.edge.store import EdgeStore
from service.store.qdrant import VectorStore

DIM = 16


def corpus(n: int, seed: int = 0) -> tuple[list[StoredDocument], np.ndarray]:
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((n, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    docs = [
        StoredDocument(
            id=f"d{i}",
            text=f"text {i}",
            title=f"title {i}" if i % 2 else "",
            metadata={
                "lang": ["en", "de", "fr"][i % 3],
                "year": 2000 + i % 7,
                "open": i % 4 == 0,
                "tags": ["a", "b"] if i % 5 == 0 else ["c"],
                "score": 0.5 if i % 2 else 1.5,
            },
        )
        for i in range(n)
    ]
    return docs, vectors


FILTERS = [
    None,
    {"lang": "de"},
    {"year": 2003},
    {"open": True},
    {"tags": "a"},
    {"score": 0.5},
    {"lang": ["de", "fr"]},
    {"year": [2001, 2002], "lang": "en"},
    {"tags": ["a", "c"], "open": False},
    {"lang": "xx"},
]


def run(coro):
    return asyncio.run(coro)


def test_edge_and_local_mode_agree_on_filters_deletes_and_counts(tmp_path):
    docs, vectors = corpus(600)
    queries = vectors[:5] * 0.9 + vectors[5:10] * 0.1

    async def scenario(store):
        await store.create("c", DIM, embedder="e", profile="p")
        for start in range(0, len(docs), 200):
            await store.upsert("c", docs[start : start + 200], vectors[start : start + 200])
        deleted = [await store.delete("c", f"d{i}") for i in range(0, 600, 9)]
        again = await store.delete("c", "d0")
        await store.upsert("c", docs[:3], vectors[:3])  # re-sent: replaces, and d0 is back
        results = [
            [(h.document.id, round(h.score, 4)) for h in await store.search("c", q, 10, f)]
            for q in queries
            for f in FILTERS
        ]
        state = (await store.count("c"), deleted, again, await store.get("c", "d9"), await store.get("c", "d1"))
        await store.aclose()
        return results, state

    edge = run(scenario(EdgeStore(tmp_path)))
    local = run(scenario(VectorStore.connect(url=None, api_key=None, path=":memory:", timeout_s=5)))
    assert edge[1] == local[1]
    assert edge[1][0] == 600 - 67 + 1 and edge[1][3] is None and edge[1][4] == docs[1]
    assert edge[0] == local[0]  # same ids, same order, same scores: below the index threshold Edge scans exactly
    assert any(edge[0]) and not edge[0][-1]  # some hits; none for an absent value


def test_collections_persist_with_their_metadata_and_errors_match(tmp_path):
    docs, vectors = corpus(10)

    async def first():
        store = EdgeStore(tmp_path)
        await store.create("kept", DIM, embedder="mini", profile="hyde")
        await store.create("gone", DIM, embedder="mini", profile="hyde")
        with pytest.raises(CollectionExists):
            await store.create("kept", DIM, embedder="x", profile="y")
        await store.upsert("kept", docs, vectors)
        with pytest.raises(VectorMismatch):
            await store.upsert("kept", docs[:1], vectors[:1, :8])
        with pytest.raises(VectorMismatch):
            await store.search("kept", vectors[0, :8], 3)
        await store.drop("gone")
        with pytest.raises(CollectionNotFound):
            await store.drop("gone")
        for call in (
            store.count("nope"),
            store.info("nope"),
            store.get("nope", "x"),
            store.search("nope", vectors[0], 1),
        ):
            with pytest.raises(CollectionNotFound):
                await call
        await store.aclose()

    async def reopened():
        store = EdgeStore(tmp_path)
        try:
            return await store.names(), await store.info("kept"), await store.exists("gone")
        finally:
            await store.aclose()

    run(first())
    names, info, gone = run(reopened())
    assert names == ["kept"] and not gone
    assert (info.count, info.dimension, info.distance, info.embedder, info.profile) == (
        10,
        DIM,
        "cosine",
        "mini",
        "hyde",
    )


def test_background_index_build_keeps_writes_made_during_it(tmp_path):
    docs, vectors = corpus(3000, seed=1)

    async def scenario():
        store = EdgeStore(tmp_path, index_threshold=1000)
        await store.create("c", DIM, embedder="e", profile="p")
        await store.upsert("c", docs[:1500], vectors[:1500])  # starts a build in a child process
        await store.upsert("c", docs[1500:], vectors[1500:])  # lands while it runs: replayed on the built copy
        await store.delete("c", "d7")
        searched = await store.search_batch("c", [SearchQuery(vectors[i], 1) for i in (0, 2999)])
        await store.wait_for_index()
        points, indexed, _ = await store.shard_info("c")
        after = await store.search("c", vectors[2999], 1, hnsw_ef=64)
        state = (await store.count("c"), await store.get("c", "d7"), await store.get("c", "d2999"), points, indexed)
        await store.aclose()
        return searched, after, state

    searched, after, (count, d7, d2999, points, indexed) = run(scenario())
    assert [hits[0].document.id for hits in searched] == ["d0", "d2999"]
    assert after[0].document.id == "d2999"
    assert count == points == 2999 and d7 is None and d2999 == docs[2999]
    assert indexed >= 1000  # the HNSW index covers what was there when the build began
    assert len(list((tmp_path / "c").glob("shard*"))) == 1  # the copy became the live shard; the old one is gone


def test_writes_arriving_while_the_build_is_replayed_are_all_kept(tmp_path, monkeypatch):
    """A replay of one operation per slice, outpaced by a writer until writes are held: nothing acknowledged is lost."""
    monkeypatch.setattr(indexing, "_REPLAY_SLICE_S", 0.0)
    monkeypatch.setattr(indexing, "_REPLAY_SLICES_BEFORE_HOLD", 1000)
    docs, vectors = corpus(1500, seed=4)
    _, extra_vectors = corpus(500, seed=5)

    async def scenario():
        store = EdgeStore(tmp_path, index_threshold=1000)
        await store.create("c", DIM, embedder="e", profile="p")
        await store.upsert("c", docs, vectors)  # starts a build
        expected = {d.id: d for d in docs}
        during_replay = 0
        for i in range(20_000):
            # 100 rounds of writes while the child builds (queued for the replay), then more during the replay
            while i >= 100 and store._tasks and store._open["c"].built is None:
                await asyncio.sleep(0.005)
            if not store._tasks:
                break
            replaying = store._open["c"].built is not None
            batch = [StoredDocument(f"w{i}", f"new {i}", "", {"lang": "de"})]
            await store.upsert("c", batch, extra_vectors[i % len(extra_vectors)][None, :])
            expected.update((d.id, d) for d in batch)
            even = 2 * i % len(docs)  # rewritten: the replay must keep the latest version
            changed = StoredDocument(f"d{even}", f"rewritten {i}", "", {"lang": "xx"})
            await store.upsert("c", [changed], vectors[even : even + 1])
            expected[changed.id] = changed
            if 2 * i + 1 < len(docs):
                assert await store.delete("c", f"d{2 * i + 1}")
                del expected[f"d{2 * i + 1}"]
            during_replay += replaying
        await store.wait_for_index()
        points, indexed, _ = await store.shard_info("c")
        stored = {d: await store.get("c", d) for d in [*expected, *(f"d{k}" for k in range(1500))]}
        hits = await store.search("c", vectors[0], 5, {"lang": "xx"}, hnsw_ef=64)
        state = (await store.count("c"), points, indexed, during_replay)
        await store.aclose()
        return expected, stored, hits, state

    expected, stored, hits, (count, points, indexed, during_replay) = run(scenario())
    assert during_replay > 100  # the writer outpaced the replay (the case under test), and was then held
    assert indexed >= 1000  # the build was swapped in
    assert count == points == len(expected)
    assert {k: v for k, v in stored.items() if v is not None} == expected  # every write kept, every delete too
    assert hits and all(h.document.metadata == {"lang": "xx"} for h in hits)
    assert len(list((tmp_path / "c").glob("shard*"))) == 1


def test_a_crash_between_the_swap_renames_is_recovered(tmp_path):
    docs, vectors = corpus(50)

    async def write():
        store = EdgeStore(tmp_path)
        await store.create("c", DIM, embedder="e", profile="p")
        await store.upsert("c", docs, vectors)
        await store.aclose()

    async def read():
        store = EdgeStore(tmp_path)
        try:
            return await store.count("c"), await store.get("c", "d49")
        finally:
            await store.aclose()

    run(write())
    folder = tmp_path / "c"
    # The state after `shard -> shard.old` and before `shard.build -> shard`: the built copy is complete.
    shutil.copytree(folder / "shard", folder / "shard.build")
    (folder / "shard").rename(folder / "shard.old")
    assert run(read()) == (50, docs[49])
    assert sorted(p.name for p in folder.iterdir()) == ["meta.json", "shard"]


def test_a_crash_before_or_after_meta_names_the_built_copy_is_recovered(tmp_path):
    """The swap's atomic step is meta.json naming the copy: a stray copy (crash before it) or the replaced shard
    (crash after it) is deleted on open, and the shard meta.json names is served."""
    docs, vectors = corpus(1200, seed=6)

    async def build():
        store = EdgeStore(tmp_path, index_threshold=1000)
        await store.create("c", DIM, embedder="e", profile="p")
        await store.upsert("c", docs, vectors)
        await store.wait_for_index()
        await store.aclose()

    async def read():
        store = EdgeStore(tmp_path)
        try:
            return await store.count("c"), await store.get("c", "d1199"), (await store.shard_info("c"))[1]
        finally:
            await store.aclose()

    run(build())
    folder = tmp_path / "c"
    live = json.loads((folder / "meta.json").read_text())["shard"]
    assert live != "shard"  # the built copy was swapped in under its own name
    shutil.copytree(folder / live, folder / "shard.0badc0py")  # a copy whose swap never happened
    (folder / "shard").mkdir()  # the replaced shard, not yet deleted
    assert run(read()) == (1200, docs[1199], 1200)
    assert sorted(p.name for p in folder.iterdir()) == ["meta.json", live]


def test_migrate_copies_documents_and_vectors_to_another_store(tmp_path):
    """`thinksearch migrate` into a qdrant-client store (the same client code as for a server: QDRANT_URL)."""
    docs, vectors = corpus(700, seed=3)

    async def fill():
        store = EdgeStore(tmp_path / "edge")
        await store.create("c", DIM, embedder="mini", profile="hyde", hnsw=HnswParams(m=8, ef_construct=64))
        await store.upsert("c", docs, vectors)
        await store.delete("c", "d3")
        expected = [await store.search("c", v, 5, {"lang": "de"}) for v in vectors[:5]]
        await store.aclose()
        return expected

    async def read():
        store = VectorStore.connect(url=None, api_key=None, path=str(tmp_path / "server"), timeout_s=5)
        try:
            found = [await store.search("c", v, 5, {"lang": "de"}) for v in vectors[:5]]
            return found, await store.info("c"), await store.get("c", "d3"), await store.get("c", "d699")
        finally:
            await store.aclose()

    expected = run(fill())
    main(["migrate", "--from-path", str(tmp_path / "edge"), "--to-path", str(tmp_path / "server")])
    found, info, d3, d699 = run(read())
    assert (info.count, info.embedder, info.profile, info.dimension) == (699, "mini", "hyde", DIM)
    assert d3 is None and d699 == docs[699]
    assert [[(h.document.id, round(h.score, 4)) for h in hits] for hits in found] == [
        [(h.document.id, round(h.score, 4)) for h in hits] for hits in expected
    ]


def test_a_local_mode_folder_is_refused_with_a_clear_message(tmp_path):
    async def make_local_folder():
        store = VectorStore.connect(url=None, api_key=None, path=str(tmp_path), timeout_s=5)
        await store.create("old", DIM, embedder="e", profile="p")
        await store.aclose()

    run(make_local_folder())
    with pytest.raises(RuntimeError, match="QDRANT_EMBEDDED=local"):
        EdgeStore(tmp_path)


def test_hidden_leftovers_of_a_crash_are_not_collections(tmp_path):
    """A crash mid-create or mid-drop leaves `.<name>.<hex>.creating` or `.dropped`, meta.json and all: not listed
    (listing one would make counting the listed collections fail)."""

    async def scenario():
        store = EdgeStore(tmp_path)
        await store.create("c1", DIM, embedder="e", profile="p")
        await store.aclose()
        for leftover in (".c1.1a2b3c4d.creating", ".x.0badc0de.dropped", "not.a.name"):
            shutil.copytree(tmp_path / "c1", tmp_path / leftover)
        store = EdgeStore(tmp_path)
        try:
            names = await store.names()
            return names, [await store.count(name) for name in names]
        finally:
            await store.aclose()

    assert run(scenario()) == (["c1"], [0])


def test_a_rejected_write_indexes_none_of_its_metadata_keys(tmp_path):
    """Keys of a write that raised take no payload-index slot (nor fix the key's type) in meta.json."""
    docs, vectors = corpus(3)

    def indexed_keys():
        return json.loads((tmp_path / "c" / "meta.json").read_text())["indexed_keys"]

    async def scenario():
        store = EdgeStore(tmp_path)
        await store.create("c", DIM, embedder="e", profile="p")
        with pytest.raises(VectorMismatch):
            await store.upsert("c", [StoredDocument("a", "t", "", {"dim": "x"})], vectors[:1, :8])
        with pytest.raises(StoreRejected):  # one vector for two documents
            two = [StoredDocument("a", "t", "", {"rows": "x"}), StoredDocument("b", "t", "", {"rows": "y"})]
            await store.upsert("c", two, vectors[:1])
        with pytest.raises(StoreRejected):  # a value the engine's binding cannot store
            await store.upsert("c", [StoredDocument("a", "t", "", {"ratio": float("inf"), "year": "x"})], vectors[:1])
        rejected = indexed_keys(), await store.count("c")
        await store.upsert("c", docs, vectors)
        found = await store.search("c", vectors[1], 3, {"year": 2001})
        await store.aclose()
        return rejected, indexed_keys(), found

    rejected, kept, found = run(scenario())
    assert rejected == ({}, 0)
    assert kept == {"lang": "Keyword", "year": "Integer", "open": "Bool", "tags": "Keyword", "score": "Float"}
    assert [h.document.id for h in found] == ["d1"]
