"""Request and response schemas of the REST API (docs/api.md). Unknown fields are rejected (422), so a typo such
as `topk` is an error, not a silently ignored field. Size limits are configurable and checked by the services."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, Field, model_validator

from service.jobs.model import JobStatus
from service.model.documents import DocumentIn, NonBlank, Strict, is_scalar_or_scalar_list

COLLECTION_NAME = r"^[a-zA-Z0-9_-]{1,64}$"


def _filter(value: dict[str, Any]) -> dict[str, Any]:
    for key, v in value.items():
        if not is_scalar_or_scalar_list(v, allow_null=False) or v == []:
            raise ValueError(f"'{key}' must be a value or a non-empty list of values")
    return value


# One readable error per bad entry, instead of one per member of a union type.
Filter = Annotated[dict[str, Any], AfterValidator(_filter)]


# --- collections ---


class HnswConfig(Strict):
    """HNSW graph parameters, fixed at creation; omitted fields take Qdrant's defaults."""

    m: int = Field(default=16, ge=4, le=128)
    ef_construct: int = Field(default=100, ge=4, le=1000)


class ChunkingConfig(Strict):
    """Split documents longer than `max_tokens` (embedder tokens, capped at its window) into chunks that overlap
    by `overlap` tokens; search returns each document once, scored by its best chunk."""

    max_tokens: int = Field(default=256, ge=32, le=8192)
    overlap: int = Field(default=32, ge=0)

    @model_validator(mode="after")
    def _overlap_under_half(self) -> ChunkingConfig:
        if self.overlap * 2 > self.max_tokens:
            raise ValueError("overlap must be at most half of max_tokens")
        return self


class CollectionCreate(Strict):
    name: str = Field(pattern=COLLECTION_NAME)
    hnsw: HnswConfig | None = None
    # A BM25 sparse vector beside the dense one (sparse and hybrid retrieval); fixed at creation.
    sparse: bool = True
    chunking: ChunkingConfig | None = None  # off unless given


class CollectionCreated(BaseModel):
    name: str
    dimension: int
    distance: str
    embedder: str
    sparse: bool = False  # has a BM25 sparse vector (sparse and hybrid retrieval)
    chunking: ChunkingConfig | None = None  # long documents split into chunks (null: off)


class CollectionSummary(BaseModel):
    name: str
    count: int


class CollectionList(BaseModel):
    collections: list[CollectionSummary]


class CollectionDetail(CollectionCreated):
    count: int


# --- documents ---


class UpsertRequest(Strict):
    documents: list[DocumentIn] = Field(min_length=1)


class UpsertResponse(BaseModel):
    upserted: int
    truncated: int = 0  # documents past the embedder's window, embedded from their beginning (no chunking)


class DocumentOut(BaseModel):
    id: str
    text: str
    title: str
    metadata: dict[str, Any]


# --- search ---


class SearchRequest(Strict):
    query: NonBlank
    top_k: int = Field(default=10, ge=1)
    filter: Filter | None = None
    think: bool | None = None
    include_thoughts: bool = False
    deadline_ms: int | None = Field(default=None, ge=1, le=600_000)
    # HNSW beam width for this search: higher = better recall, slower (unset = the engine's default).
    hnsw_ef: int | None = Field(default=None, ge=1, le=4096)
    # Answer as Server-Sent Events: direct results first, then think results (docs/api.md).
    stream: bool = False
    # dense (embeddings), sparse (BM25) or hybrid (both, fused in the engine); unset: hybrid where the
    # collection has a sparse side, else dense.
    retrieval: Literal["dense", "sparse", "hybrid"] | None = None


class SearchHit(DocumentOut):
    score: float


class SearchResponse(BaseModel):
    results: list[SearchHit]
    mode: Literal["think", "direct"]
    thought_cache: Literal["hit", "miss", "coalesced"] | None
    degraded: bool
    thoughts: list[str] | None
    timings_ms: dict[str, float]
    # What answered: a collection without a sparse side answers dense whatever was asked.
    retrieval: Literal["dense", "sparse", "hybrid"] = "dense"


# --- batch search, streaming, warming (issue 6) ---


class BatchSearchRequest(Strict):
    searches: list[SearchRequest] = Field(min_length=1)


class BatchSearchResponse(BaseModel):
    responses: list[SearchResponse]


class StreamDone(BaseModel):
    """The last event of a streamed search."""

    mode: Literal["think", "direct"]
    degraded: bool
    reason: str | None


class WarmRequest(Strict):
    queries: list[NonBlank] = Field(min_length=1)


class WarmProgress(BaseModel):
    """A warm job's counts (`kind: "warm"` jobs only)."""

    queries: int
    done: int  # queries finished, whatever their outcome
    skipped: int  # already cached
    warmed: int  # thought (or embedded) and cached now
    failed: int
    worker_requests: int
    queries_per_second: float | None


# --- health ---


class Health(BaseModel):
    status: Literal["ok"]


class DependencyState(BaseModel):
    ok: bool
    detail: str
    # The dependency's circuit breaker: closed, opened or half-opened (None: no breaker guards it).
    breaker: str | None = None


class Readiness(BaseModel):
    status: Literal["ready", "degraded", "unavailable", "draining"]
    dependencies: dict[str, DependencyState]


# --- bulk ingestion and jobs (issue 5) ---



class BulkAccepted(BaseModel):
    job_id: str


class JobLineError(BaseModel):
    line: int
    id: str | None
    error: str


class JobOut(BaseModel):
    job_id: str
    collection: str
    status: JobStatus
    total: int  # lines read from the upload (accepted + rejected)
    accepted: int  # lines queued for ingestion
    processed: int  # accepted lines written to the store
    failed: int  # rejected lines (every one counted; `errors` keeps the first N)
    truncated: int  # documents longer than the embedder's window (only their beginning is embedded)
    errors: list[JobLineError]
    error: str | None  # why a `failed` job could not complete
    created_at: str
    updated_at: str
    started_at: str | None
    finished_at: str | None
    documents_per_second: float | None
    kind: Literal["ingest", "warm"] = "ingest"
    warm: WarmProgress | None = None  # a warm job's progress


class JobList(BaseModel):
    jobs: list[JobOut]
