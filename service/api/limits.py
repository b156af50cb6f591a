"""Configurable size limits (docs/api.md): a field outside its limit is a 422 naming the field."""

from __future__ import annotations

import json

from service.api.problems import field_error
from service.api.protocol import BatchSearchRequest, DocumentIn, SearchRequest, UpsertRequest, WarmRequest
from service.settings import Settings


def check_upsert(request: UpsertRequest, settings: Settings) -> None:
    if len(request.documents) > settings.max_documents_per_request:
        raise field_error("documents", f"at most {settings.max_documents_per_request} documents per request")
    for i, doc in enumerate(request.documents):
        if violation := document_violation(doc, settings):
            field, message = violation
            raise field_error(f"documents[{i}].{field}", message)


def document_violation(doc: DocumentIn, settings: Settings) -> tuple[str, str] | None:
    """The first size limit one document breaks, as (field, message); shared by the upsert and the bulk path."""
    if len(doc.text) > settings.max_text_chars:
        return "text", f"longer than {settings.max_text_chars} characters"
    if len(doc.title) > settings.max_text_chars:
        return "title", f"longer than {settings.max_text_chars} characters"
    if len(json.dumps(doc.metadata).encode()) > settings.max_metadata_bytes:
        return "metadata", f"larger than {settings.max_metadata_bytes} bytes"
    return None


def check_search(request: SearchRequest, settings: Settings, prefix: str = "") -> None:
    if len(request.query) > settings.max_query_chars:
        raise field_error(f"{prefix}query", f"longer than {settings.max_query_chars} characters")
    if request.top_k > settings.max_top_k:
        raise field_error(f"{prefix}top_k", f"must be between 1 and {settings.max_top_k}")


def check_batch(request: BatchSearchRequest, settings: Settings) -> None:
    if len(request.searches) > settings.max_batch_queries:
        raise field_error("searches", f"at most {settings.max_batch_queries} searches per batch")
    for i, search in enumerate(request.searches):
        if search.stream:
            raise field_error(f"searches[{i}].stream", "a batch is not streamed")
        check_search(search, settings, prefix=f"searches[{i}].")


def check_warm(request: WarmRequest, settings: Settings) -> None:
    if len(request.queries) > settings.max_warm_queries_per_request:
        raise field_error("queries", f"at most {settings.max_warm_queries_per_request} queries per request")
    for i, query in enumerate(request.queries):
        if len(query) > settings.max_query_chars:
            raise field_error(f"queries[{i}]", f"longer than {settings.max_query_chars} characters")
