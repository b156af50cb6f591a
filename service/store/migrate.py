"""Copy a collection, vectors included (no re-embedding), from the Edge store into another store."""

from __future__ import annotations

from collections.abc import Callable

from service.store.base import Store
from service.store.edge.store import EdgeStore


async def copy_collection(
    source: EdgeStore, target: Store, name: str, on_batch: Callable[[int], None] | None = None
) -> int:
    """Copies a collection, vectors included (no re-embedding), into another store, e.g. a Qdrant server."""
    info = await source.info(name)
    await target.create(
        name,
        info.dimension,
        embedder=info.embedder,
        profile=info.profile,
        hnsw=await source.hnsw(name),
        sparse=info.sparse,  # the target computes the same BM25 vectors from the text
        chunking=info.chunking,
        policy=await source.policy(name),
    )
    copied = 0
    async for documents, vectors in source.export(name):
        # A parent's chunks may come in different batches: none of them replaces another.
        await target.upsert(name, documents, vectors, replace_chunks=False)
        copied += len(documents)
        if on_batch:
            on_batch(len(documents))
    return copied
