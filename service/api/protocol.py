"""Request and response schemas of the REST API (docs/api.md). Unknown fields are rejected (422), so a typo such
as `topk` is an error, not a silently ignored field. Size limits are configurable and checked by the services."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, Field, model_validator

from service.api.protocol_snapshots import RestoreProgress
from service.jobs.model import JobStatus
from service.model.documents import MAX_FILTER_KEYS, DocumentIn, NonBlank, Strict, entry_problem

# For the schema (pydantic's Rust regex, OpenAPI's ECMA-262): there `$` is the very end of the text. Python's `re`
# is different: its `$` also matches before a final newline, so Python code checks with `is_collection_name`
# (fullmatch), never `re.match(COLLECTION_NAME, ...)`, which would let "name\n" through.
COLLECTION_NAME = r"^[a-zA-Z0-9_-]{1,64}$"
_COLLECTION_NAME_CHARS = re.compile(r"[a-zA-Z0-9_-]{1,64}")


def is_collection_name(name: str) -> bool:
    return _COLLECTION_NAME_CHARS.fullmatch(name) is not None


def _filter(value: dict[str, Any]) -> dict[str, Any]:
    """The same key and value rules as metadata (service/model/documents.py), no nulls, no empty any-of lists."""
    if len(value) > MAX_FILTER_KEYS:
        raise ValueError(f"at most {MAX_FILTER_KEYS} keys")
    for key, v in value.items():
        if problem := entry_problem(key, v, allow_null=False, allow_empty_list=False):
            raise ValueError(problem)
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


def _has_query_slot(prompt: str) -> str:
    if "{query}" not in prompt:
        raise ValueError("must contain {query}, where the query goes")
    try:
        prompt.format(query="q")
    except (KeyError, IndexError, ValueError) as exc:
        raise ValueError(f"other braces must be doubled ({{{{ and }}}}): {exc}") from exc
    return prompt


class ThinkPolicyIn(Strict):
    """A collection's think policy (docs/api.md); unset fields take the service's settings."""

    enabled: bool | None = None  # `think` of searches that do not say
    profile: Literal["hyde", "query2doc", "o1"] | None = None
    prompt: Annotated[str, Field(min_length=9, max_length=4000), AfterValidator(_has_query_slot)] | None = None
    n: int | None = Field(default=None, ge=1, le=32)
    max_tokens: int | None = Field(default=None, ge=1, le=2048)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    fusion: Literal["vector", "rank"] | None = None
    query_weight: float | None = Field(default=None, ge=0.0, le=1.0)  # vector fusion's α
    think_weight: float | None = Field(default=None, ge=0.0, le=1.0)  # rank fusion's weight of the think list
    sparse_query_repeats: int | None = Field(default=None, ge=1, le=20)


class ThinkPolicyOut(BaseModel):
    """The policy as searches apply it: the stored fields with the service's defaults filled in."""

    enabled: bool
    profile: str
    prompt: str
    n: int
    max_tokens: int
    temperature: float
    fusion: Literal["vector", "rank"]
    query_weight: float | None  # null: the profile's own fusion (HyDE: the plain mean)
    think_weight: float | None
    sparse_query_repeats: int


class CollectionCreate(Strict):
    name: str = Field(pattern=COLLECTION_NAME)
    hnsw: HnswConfig | None = None
    # A BM25 sparse vector beside the dense one (sparse and hybrid retrieval); fixed at creation.
    sparse: bool = True
    chunking: ChunkingConfig | None = None  # off unless given
    think: ThinkPolicyIn | None = None  # changed later with PATCH


class CollectionPatch(Strict):
    """What may change after creation: the think policy (fields given replace the stored ones; null resets)."""

    think: ThinkPolicyIn


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
    think: ThinkPolicyOut | None = None


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


class DocumentPageOut(BaseModel):
    """A page of `GET /v1/collections/{name}/documents`: pass `next_cursor` back for the next (null: the last)."""

    documents: list[DocumentOut]
    next_cursor: str | None


class DeleteWhereRequest(Strict):
    """`POST /v1/collections/{name}/documents/delete`: exactly one of a non-empty `filter` or `ids`."""

    filter: Filter | None = None
    ids: list[Annotated[str, Field(min_length=1, max_length=512)]] | None = Field(
        default=None, min_length=1, max_length=1000
    )


class DeleteWhereResponse(BaseModel):
    deleted: int


# --- search ---


class FusionIn(Strict):
    method: Literal["vector", "rank"]
    query_weight: float | None = Field(default=None, ge=0.0, le=1.0)
    think_weight: float | None = Field(default=None, ge=0.0, le=1.0)


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
    # This search's own fusion of thinking and the query (experiments, tuning); unset: the collection's policy.
    fusion: FusionIn | None = None


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


class TuneGeneration(Strict):
    """One generation config of a tuning grid: the think policy fields it tries (the rest: the collection's)."""

    label: str | None = Field(default=None, min_length=1, max_length=200)
    profile: Literal["hyde", "query2doc", "o1"] | None = None
    prompt: Annotated[str, Field(min_length=9, max_length=4000), AfterValidator(_has_query_slot)] | None = None
    n: int | None = Field(default=None, ge=1, le=32)
    max_tokens: int | None = Field(default=None, ge=1, le=2048)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    sparse_query_repeats: int | None = Field(default=None, ge=1, le=20)


class TuneGrid(Strict):
    generation: list[TuneGeneration] = Field(min_length=1, max_length=16)
    fusion: list[FusionIn] = Field(min_length=1, max_length=16)


class TuneRequest(Strict):
    """A judged sample of the collection: which think policy pays on it (docs/api.md)."""

    queries: dict[str, NonBlank] = Field(min_length=1)  # query id -> text
    qrels: dict[str, dict[str, Annotated[int, Field(ge=0, le=1000)]]] = Field(min_length=1)  # id -> {doc: grade}
    grid: TuneGrid | None = None  # unset: the default grid
    max_queries: int | None = Field(default=None, ge=1)  # the first N judged queries in sorted id order
    dry_run: bool = False  # measure only: the policy stays as it is
    min_gain: float = Field(default=0.0, ge=0.0, le=1.0)  # nDCG@10 thinking must add over direct to be on
    concurrency: int = Field(default=4, ge=1, le=32)
    deadline_ms: int = Field(default=600_000, ge=1, le=600_000)  # each think search's


class TuneRowOut(BaseModel):
    label: str
    generation: str | None  # null: direct mode
    fusion: str | None
    queries: int
    metrics: dict[str, float]  # ndcg@10, recall@100, mrr@10
    latency: dict[str, float]  # p50_ms, p95_ms, p99_ms
    served: dict[str, int]
    cold_p50_ms: float | None
    tokens_per_query: float | None
    policy: dict[str, Any]
    winner: bool
    vs_direct: tuple[int, int] | None  # queries this row raises / lowers against direct


class TuneResultOut(BaseModel):
    rows: list[TuneRowOut]
    best: str
    thinking: bool
    written: dict[str, Any] | None
    original: dict[str, Any]
    policy: dict[str, Any]


class TuneProgress(BaseModel):
    """A tune job's progress (`kind: "tune"` jobs only), and its table once it succeeded."""

    searches: int
    done: int
    stage: str
    result: TuneResultOut | None = None


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
    kind: Literal["ingest", "warm", "tune", "restore"] = "ingest"
    warm: WarmProgress | None = None  # a warm job's progress
    tune: TuneProgress | None = None  # a tune job's progress and result
    restore: RestoreProgress | None = None  # a restore job's progress (protocol_snapshots.py)


class JobList(BaseModel):
    jobs: list[JobOut]
