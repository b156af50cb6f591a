"""Our types in Qdrant Edge's: shard configuration, point vectors and payloads, payload indexes, filters and queries.

The same shapes as qdrant.py builds for qdrant-client, so that both backends find the same documents.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import qdrant_edge as qe

from service.clients.sparse import SPARSE_VECTOR, bm25, sparse_text
from service.model.collections import HnswParams
from service.model.documents import FilterValue, StoredDocument
from service.store.base import SearchQuery
from service.store.layout import CHUNK_KEY, PARENT_KEY, WRITE_KEY, base_payload, chunk_point_id, effective_retrieval

# qdrant-edge-py 0.9.0 turns MatchValue(True) into MatchValue(1) (the binding reads a bool as an int), so a
# boolean match finds nothing. Boolean metadata therefore also goes into the payload as "true"/"false" under this
# key, and boolean filters match those strings; the stored metadata itself is unchanged.
_BOOL = "_bool"

# A chunked collection counts documents as its chunk-0 points.
FIRST_CHUNKS = qe.Filter(must=[qe.FieldCondition(key=CHUNK_KEY, match=qe.MatchValue(0))])
# The points with a BM25 vector (a point whose text has no terms has none).
WITH_SPARSE = qe.Filter(must=[qe.HasVectorCondition(SPARSE_VECTOR)])


def shard_config(dimension: int, hnsw: HnswParams, sparse: bool, full_scan_kb: int) -> qe.EdgeConfig:
    return qe.EdgeConfig(
        vectors=qe.EdgeVectorParams(size=dimension, distance=qe.Distance.Cosine),
        # IDF is the engine's: computed over the shard as it is when a query runs.
        sparse_vectors={SPARSE_VECTOR: qe.EdgeSparseVectorParams(modifier=qe.Modifier.Idf)} if sparse else None,
        hnsw_config=qe.HnswIndexConfig(m=hnsw.m, ef_construct=hnsw.ef_construct, full_scan_threshold=full_scan_kb),
        # When to index is the store's choice (index_threshold, in points): a build indexes every segment.
        optimizers=qe.EdgeOptimizersConfig(indexing_threshold=1),
    )


def points(documents: list[StoredDocument], vectors: np.ndarray, write_id: str, sparse: bool) -> list[qe.Point]:
    """A write's points (one vector row per document); raises on a payload the engine cannot store."""
    return [
        qe.Point(chunk_point_id(d), _vectors(d, v, sparse), _payload(d, write_id))
        for d, v in zip(documents, vectors.astype(np.float32).tolist(), strict=True)
    ]


def _vectors(d: StoredDocument, dense: list[float], sparse: bool) -> Any:
    """A point's vectors; with a sparse side, also its BM25 vector from its text (here in the write path, so every
    ingestion route gets it)."""
    if not sparse:
        return dense
    if d.chunk:  # a chunked document's BM25 vector is on chunk 0 only (see qdrant._vectors)
        return {"": dense}
    vector = bm25().document(sparse_text(d.title, d.text))
    if not vector.indices:
        # No terms (stopwords only): no sparse vector at all, so that counting points with one counts the
        # sparse vectors the engine reports as indexed (Collection.dense_index).
        return {"": dense}
    return {"": dense, SPARSE_VECTOR: qe.SparseVector(vector.indices, vector.values)}


def _payload(d: StoredDocument, write_id: str = "") -> dict[str, Any]:
    """The stored payload, with the string shadow of boolean metadata (see _BOOL)."""
    result = base_payload(d, write_id)
    shadow: dict[str, Any] = {}
    for key, value in d.metadata.items():
        if isinstance(value, bool):
            shadow[key] = _bool_text(value)
        elif isinstance(value, list) and any(isinstance(v, bool) for v in value):
            shadow[key] = [_bool_text(v) for v in value if isinstance(v, bool)]
    if shadow:
        result[_BOOL] = shadow
    return result


def schema_of(value: Any) -> str | None:
    """The payload index type for a metadata value (a list's is its first item's); None: not indexable."""
    if isinstance(value, list):
        return schema_of(value[0]) if value else None
    if isinstance(value, bool):
        return "Bool"
    if isinstance(value, int):
        return "Integer"
    if isinstance(value, float):
        return "Float"
    if isinstance(value, str):
        return "Keyword"
    return None


def payload_index(key: str, schema: str) -> qe.UpdateOperation:
    """The payload index of a metadata key of the given schema_of type."""
    # Booleans are matched on their string shadow (see _payload).
    path, schema = (f"{_BOOL}.{key}", "Keyword") if schema == "Bool" else (f"metadata.{key}", schema)
    return qe.UpdateOperation.create_field_index(path, getattr(qe.PayloadSchemaType, schema))


def stale_chunks(parents: list[str], write_id: str) -> qe.Filter:
    """The chunks of these parents not written by this write (every chunk of them for write_id "")."""
    return qe.Filter(
        must=[qe.FieldCondition(key=PARENT_KEY, match=qe.MatchAny(parents))],
        must_not=[qe.FieldCondition(key=WRITE_KEY, match=qe.MatchValue(write_id))],
    )


def edge_filter(equal: dict[str, FilterValue] | None) -> qe.Filter | None:
    """The same equality / any-of semantics as qdrant.metadata_filter, in Edge's types."""
    if not equal:
        return None
    return qe.Filter(must=[_condition(k, v) for k, v in equal.items()])


def selection(
    equal: dict[str, FilterValue] | None, ids: list[str] | None = None, *, first_chunks: bool = False
) -> qe.Filter | None:
    """Browse and delete by filter: points matching `equal`, of these parent ids, and (first_chunks) only each
    document's chunk 0 (the same selection as qdrant_filters.selection)."""
    must: list[Any] = [_condition(k, v) for k, v in (equal or {}).items()]
    if ids is not None:
        must.append(qe.FieldCondition(key=PARENT_KEY, match=qe.MatchAny(ids)))
    if first_chunks:
        must.append(qe.FieldCondition(key=CHUNK_KEY, match=qe.MatchValue(0)))
    return qe.Filter(must=must) if must else None


def edge_request(q: SearchQuery, sparse_side: bool) -> qe.QueryRequest:
    """One query: dense nearest, sparse nearest on the BM25 vector, or both prefetched and fused by the engine
    (the same shapes as qdrant._qc_query)."""
    params = qe.SearchParams(hnsw_ef=q.hnsw_ef) if q.hnsw_ef else None
    condition = edge_filter(q.equal)
    dense = qe.Query.Nearest(q.vector.astype(np.float32).tolist())
    retrieval = effective_retrieval(q, sparse_side)
    if retrieval == "dense":
        return qe.QueryRequest(limit=q.top_k, query=dense, filter=condition, with_payload=True, params=params)
    assert q.sparse is not None
    sparse = qe.Query.Nearest(qe.SparseVector(q.sparse.indices, q.sparse.values), using=SPARSE_VECTOR)
    if retrieval == "sparse":
        return qe.QueryRequest(limit=q.top_k, query=sparse, filter=condition, with_payload=True)
    depth = max(q.fusion.prefetch, q.top_k)
    prefetches = [
        qe.Prefetch(limit=depth, query=dense, filter=condition, params=params),
        qe.Prefetch(limit=depth, query=sparse, filter=condition),
    ]
    fused = qe.Fusion.Rrf(k=q.fusion.k) if q.fusion.method == "rrf" else qe.Fusion.Dbsf()
    return qe.QueryRequest(limit=q.top_k, prefetches=prefetches, query=fused, with_payload=True)


def _bool_text(value: bool) -> str:
    return "true" if value else "false"


def _condition(key: str, value: FilterValue) -> Any:
    path = f"metadata.{key}"
    if isinstance(value, bool):
        return qe.FieldCondition(key=f"{_BOOL}.{key}", match=qe.MatchValue(_bool_text(value)))
    if isinstance(value, list):
        if all(isinstance(v, str) for v in value) or all(type(v) is int for v in value):
            return qe.FieldCondition(key=path, match=qe.MatchAny(value))
        return qe.Filter(should=[_condition(key, v) for v in value])
    if isinstance(value, float):
        # Qdrant matches floats by range only.
        return qe.FieldCondition(key=path, range=qe.RangeFloat(gte=value, lte=value))
    return qe.FieldCondition(key=path, match=qe.MatchValue(value))
