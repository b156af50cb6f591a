"""Configurable size limits (docs/api.md): a field outside its limit is a 422 naming the field."""

from __future__ import annotations

from service.api.problems import field_error
from service.api.protocol import BatchSearchRequest, SearchRequest, UpsertRequest, WarmRequest
from service.model.documents import document_violation
from service.settings import Settings


def check_upsert(request: UpsertRequest, settings: Settings) -> None:
    if len(request.documents) > settings.max_documents_per_request:
        raise field_error("documents", f"at most {settings.max_documents_per_request} documents per request")
    for i, doc in enumerate(request.documents):
        if violation := document_violation(doc, settings):
            field, message = violation
            raise field_error(f"documents[{i}].{field}", message)


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
    # One batch is one embedder call on the query lane: a budget of characters keeps one caller from holding it
    # for seconds (64 queries of 8,000 characters take ~3 s of MiniLM on one thread; 64 of 250, ~1 s).
    total = sum(len(search.query) for search in request.searches)
    if total > settings.max_batch_query_chars:
        raise field_error(
            "searches",
            f"the queries of one batch hold at most {settings.max_batch_query_chars} characters together "
            f"(these hold {total}); split the batch",
        )


def check_warm(request: WarmRequest, settings: Settings) -> None:
    if len(request.queries) > settings.max_warm_queries_per_request:
        raise field_error("queries", f"at most {settings.max_warm_queries_per_request} queries per request")
    for i, query in enumerate(request.queries):
        if len(query) > settings.max_query_chars:
            raise field_error(f"queries[{i}]", f"longer than {settings.max_query_chars} characters")
