"""Browse and delete by filter on an Edge collection (on the store thread): scroll in point-id order."""

from __future__ import annotations

import qdrant_edge as qe

from service.model.documents import FilterValue
from service.store.base import DocumentPage
from service.store.edge import translate
from service.store.edge.collection import Collection
from service.store.layout import document_from_payload


def page(collection: Collection, limit: int, cursor: str | None, equal: dict[str, FilterValue] | None) -> DocumentPage:
    chosen = translate.selection(equal, first_chunks=collection.chunking is not None)
    request = qe.ScrollRequest(offset=cursor, limit=limit, filter=chosen, with_payload=True, with_vector=False)
    records, offset = collection.shard.scroll(request)
    documents = [document_from_payload(r.payload) for r in records]
    return DocumentPage(documents, None if offset is None else str(offset))


def delete_where(collection: Collection, equal: dict[str, FilterValue] | None, ids: list[str] | None) -> int:
    """Counts the matching documents, then deletes every point (chunk) of them in one filtered delete."""
    if not equal and ids is None:
        raise ValueError("delete_where needs a filter or ids (deleting everything is dropping the collection)")
    if ids is not None and not ids:
        return 0
    counted = translate.selection(equal, ids, first_chunks=collection.chunking is not None)
    count = collection.shard.count(qe.CountRequest(exact=True, filter=counted))
    chosen = translate.selection(equal, ids)
    if count and chosen is not None:
        collection.apply(qe.UpdateOperation.delete_points_by_filter(chosen))
    return count
