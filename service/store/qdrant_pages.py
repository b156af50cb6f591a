"""Browse and delete by filter on qdrant-client (a server, or embedded local mode): scroll in point-id order."""

from __future__ import annotations

from qdrant_client import AsyncQdrantClient, models

from service.model.documents import FilterValue
from service.store.base import DocumentPage
from service.store.layout import document_from_payload
from service.store.qdrant_filters import selection


async def page(
    client: AsyncQdrantClient,
    name: str,
    limit: int,
    cursor: str | None,
    equal: dict[str, FilterValue] | None,
    *,
    chunked: bool,
) -> DocumentPage:
    records, offset = await client.scroll(
        name,
        scroll_filter=selection(equal, first_chunks=chunked),
        limit=limit,
        offset=cursor,
        with_payload=True,
        with_vectors=False,
    )
    documents = [document_from_payload(r.payload) for r in records]
    return DocumentPage(documents, None if offset is None else str(offset))


async def delete_where(
    client: AsyncQdrantClient,
    name: str,
    equal: dict[str, FilterValue] | None,
    ids: list[str] | None,
    *,
    chunked: bool,
) -> int:
    """Counts the matching documents, then deletes every point (chunk) of them in one filtered delete."""
    if not equal and ids is None:
        raise ValueError("delete_where needs a filter or ids (deleting everything is dropping the collection)")
    if ids is not None and not ids:
        return 0
    counted = await client.count(name, count_filter=selection(equal, ids, first_chunks=chunked), exact=True)
    if counted.count:
        chosen = selection(equal, ids)
        assert chosen is not None
        await client.delete(name, points_selector=models.FilterSelector(filter=chosen), wait=True)
    return counted.count
