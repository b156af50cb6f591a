"""Our filters in qdrant-client's types: metadata equality / any-of (searches, browse, delete by filter) and the
selections that browse and delete-by-filter add to it (first chunks, parent ids)."""

from __future__ import annotations

from qdrant_client import models

from service.model.documents import FilterValue
from service.store.layout import CHUNK_KEY, PARENT_KEY


def _condition(key: str, value: FilterValue) -> models.Condition:
    field = f"metadata.{key}"
    if isinstance(value, list):
        if all(isinstance(v, str) for v in value) or all(type(v) is int for v in value):
            return models.FieldCondition(key=field, match=models.MatchAny(any=value))  # type: ignore[arg-type]
        return models.Filter(should=[_condition(key, v) for v in value])
    if isinstance(value, float):
        # Qdrant matches floats by range only.
        return models.FieldCondition(key=field, range=models.Range(gte=value, lte=value))
    return models.FieldCondition(key=field, match=models.MatchValue(value=value))


def metadata_filter(equal: dict[str, FilterValue] | None) -> models.Filter | None:
    if not equal:
        return None
    return models.Filter(must=[_condition(k, v) for k, v in equal.items()])


def selection(
    equal: dict[str, FilterValue] | None, ids: list[str] | None = None, *, first_chunks: bool = False
) -> models.Filter | None:
    """Points matching `equal`, of these parent ids, and (first_chunks) only each document's chunk 0: a chunked
    collection's documents once each. Every chunk carries its document's metadata and id, so without first_chunks
    the selection holds every chunk of each matching document."""
    must: list[models.Condition] = [_condition(k, v) for k, v in (equal or {}).items()]
    if ids is not None:
        must.append(models.FieldCondition(key=PARENT_KEY, match=models.MatchAny(any=ids)))
    if first_chunks:
        must.append(models.FieldCondition(key=CHUNK_KEY, match=models.MatchValue(value=0)))
    return models.Filter(must=must) if must else None
