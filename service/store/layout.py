"""How documents lie in a collection, on both backends: point ids, payload, chunks.

Documents keep their own ids in the payload; the Qdrant point id is a UUIDv5 of the document id, so re-sending
a document replaces it.

Chunked collections (see service/documents/chunking.py) hold one point per chunk. Every chunk carries its parent's
id under `doc_id` (PARENT_KEY) and its index under `chunk`; chunk 0 has the document's own point id and is the only
one that stores the text, so GET returns the whole document and counting chunk-0 points counts documents. A write
tags its chunks with a write id and then deletes the parent's chunks without it, so a shorter re-sent document
leaves no stale chunks. Searches group by parent: each document once, scored by its best chunk.
"""

from __future__ import annotations

import uuid
from typing import Any

from service.model.documents import Hit, StoredDocument
from service.model.search import Retrieval
from service.store.base import SearchQuery

_POINT_NAMESPACE = uuid.UUID("6f1f2b9e-3c55-4d8a-9a43-2f6c1d0e8b71")


def point_id(document_id: str) -> str:
    return str(uuid.uuid5(_POINT_NAMESPACE, document_id))


# --- chunks: parent ids, stale-chunk cleanup, one hit per parent ---

PARENT_KEY = "doc_id"  # a document's own id; on a chunk, its parent's
CHUNK_KEY = "chunk"  # a chunk's index (0 = the point that holds the text)
WRITE_KEY = "write"  # the write that stored a chunk: older chunks of the same parent are stale


def chunk_point_id(document: StoredDocument) -> str:
    if not document.chunk:  # unchunked, or chunk 0: the document's own point id (GET and delete find it)
        return point_id(document.id)
    return str(uuid.uuid5(_POINT_NAMESPACE, f"{document.id}\x1f{document.chunk}"))


def base_payload(d: StoredDocument, write_id: str) -> dict[str, Any]:
    payload: dict[str, Any] = {PARENT_KEY: d.id, "text": d.text, "title": d.title, "metadata": d.metadata}
    if d.chunk is not None:
        payload[CHUNK_KEY] = d.chunk
        payload[WRITE_KEY] = write_id
        if d.chunk:
            payload["text"] = ""  # only chunk 0 stores the text (see the module docstring)
    return payload


def new_write_id() -> str:
    return uuid.uuid4().hex


def chunked_ids(documents: list[StoredDocument]) -> list[str]:
    """Parents written as chunks in this write: their chunks from earlier writes are deleted after it."""
    return sorted({d.id for d in documents if d.chunk is not None})


def best_per_parent(hits: list[Hit], top_k: int) -> list[Hit]:
    """Hits in score order, one per parent (its best chunk), at most top_k: Qdrant Edge has no group query."""
    seen: set[str] = set()
    best = []
    for hit in hits:
        if hit.document.id not in seen:
            seen.add(hit.document.id)
            best.append(hit)
            if len(best) == top_k:
                break
    return best


def parents_to_fetch(results: list[list[Hit]]) -> list[str]:
    """Point ids of the documents whose best hit is a chunk without the text (chunk > 0)."""
    return sorted({point_id(h.document.id) for hits in results for h in hits if h.document.chunk})


def with_parents(results: list[list[Hit]], parents: dict[str, StoredDocument]) -> list[list[Hit]]:
    """Each hit as its whole document (chunk 0's payload), keeping the chunk's score."""
    return [
        [Hit(parents.get(h.document.id, h.document) if h.document.chunk else h.document, h.score) for h in hits]
        for hits in results
    ]



def document_from_payload(payload: dict[str, Any] | None) -> StoredDocument:
    payload = payload or {}
    chunk = payload.get(CHUNK_KEY)
    return StoredDocument(
        id=payload.get(PARENT_KEY, ""),
        text=payload.get("text", ""),
        title=payload.get("title", ""),
        metadata=payload.get("metadata", {}),
        chunk=int(chunk) if chunk is not None else None,
    )



def effective_retrieval(query: SearchQuery, sparse_side: bool) -> Retrieval:
    """What a query gets on a collection: without a sparse side (or a sparse query), dense."""
    return query.retrieval if sparse_side and query.sparse is not None else "dense"
