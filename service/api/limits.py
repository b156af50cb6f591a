"""Configurable size limits (docs/api.md): a field outside its limit is a 422 naming the field."""

from __future__ import annotations

from service.api.problems import field_error
from service.api.protocol import BatchSearchRequest, SearchRequest, TuneRequest, UpsertRequest, WarmRequest
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


# A tuning job's judged set: SciFact's train split is 809 queries; ids as long as a document id may be.
MAX_TUNE_QUERIES = 10_000
MAX_TUNE_JUDGEMENTS = 200_000
MAX_ID_CHARS = 512


def check_tune(request: TuneRequest, settings: Settings) -> dict[str, str]:
    """The judged queries (those with both a text and judgements), or a 422 naming the field."""
    if len(request.queries) > MAX_TUNE_QUERIES:
        raise field_error("queries", f"at most {MAX_TUNE_QUERIES} queries")
    for qid, text in request.queries.items():
        if len(qid) > MAX_ID_CHARS:
            raise field_error("queries", f"a query id is longer than {MAX_ID_CHARS} characters")
        if len(text) > settings.max_query_chars:
            raise field_error(f"queries.{qid[:80]}", f"longer than {settings.max_query_chars} characters")
    if sum(len(docs) for docs in request.qrels.values()) > MAX_TUNE_JUDGEMENTS:
        raise field_error("qrels", f"at most {MAX_TUNE_JUDGEMENTS} judgements")
    if any(len(doc) > MAX_ID_CHARS for docs in request.qrels.values() for doc in docs):
        raise field_error("qrels", f"a document id is longer than {MAX_ID_CHARS} characters")
    judged = sorted(q for q in request.queries if request.qrels.get(q))
    if request.max_queries:
        judged = judged[: request.max_queries]
    if not judged:
        raise field_error("qrels", "no query has both a text in `queries` and judgements in `qrels`")
    return {q: request.queries[q] for q in judged}


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
