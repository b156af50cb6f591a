"""The one settings object: every knob of the service, read from the environment (README: Configuration)."""

from __future__ import annotations

from functools import lru_cache
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, Field, TypeAdapter, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

Scope = Literal["search", "ingest", "admin"]


class RateLimit(BaseModel):
    """A token bucket: `rate` requests per second sustained, `burst` at once."""

    rate: float = Field(gt=0)
    burst: int = Field(ge=1)


KEY_NAME = r"^[A-Za-z0-9_.-]{1,64}$"
# A collection name, or a prefix of one followed by `*` ("team-a-*"); `*` alone is every collection.
COLLECTION_GRANT = r"^([A-Za-z0-9_-]{1,64}\*?|\*)$"


class KeySpec(BaseModel):
    """An API key's grants: its scopes, an optional name for logs, per-scope rate limits of its own, the collections
    it may reach (unset: all) and when it expires (unset: never)."""

    scopes: list[Scope]
    name: str | None = Field(default=None, pattern=KEY_NAME)
    rate_limits: dict[Scope, RateLimit] = Field(default_factory=dict)
    collections: list[Annotated[str, Field(pattern=COLLECTION_GRANT)]] | None = Field(default=None, max_length=256)
    expires_at: AwareDatetime | None = None


Grant = list[Scope] | KeySpec
_GRANT: TypeAdapter[Grant] = TypeAdapter(Grant)


def _grant_error(error: Any) -> str:
    """("list[literal[...]]", 0) -> "as a list of scopes [0]": one readable line per branch of the union."""
    branch, *rest = error["loc"] or ("",)
    where = "as a list of scopes" if str(branch).startswith("list") else "as an object"
    path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in rest)
    return f"{where}{' ' + path.lstrip('.') if path else ''}: {error['msg']}"


class Settings(BaseSettings):
    # hide_input_in_errors: a bad value (an API key, a password in a URL) is never echoed by a startup error.
    model_config = SettingsConfigDict(env_file=".env", extra="ignore", hide_input_in_errors=True)

    # Bind address (the container image sets HOST=0.0.0.0).
    host: str = "127.0.0.1"
    port: int = 8000
    log_level: str = "INFO"

    # Vector store: a Qdrant server/cluster, or qdrant-client's embedded local mode.
    qdrant_url: str | None = None
    qdrant_api_key: str | None = None
    qdrant_path: str = "./data/qdrant"
    qdrant_timeout_s: float = 10.0
    # Snapshot files (docs/api.md "Snapshots"); unset: a `snapshots` folder beside QDRANT_PATH (./data/snapshots).
    # With several gateway replicas, a folder they all share.
    snapshot_path: str | None = None

    # Embedded store (QDRANT_URL unset): "edge" = Qdrant Edge, Qdrant's engine in-process (HNSW, payload indexes);
    # "local" = qdrant-client's local mode (NumPy brute force). QDRANT_PATH=":memory:" always uses local mode.
    qdrant_embedded: Literal["edge", "local"] = "edge"
    # Edge: points not yet in the HNSW index that start a background build; below it searches are exact scans.
    qdrant_edge_index_threshold: int = Field(default=20_000, ge=1)

    # Thought cache, coalescing and (later) jobs; unset = in-process cache.
    redis_url: str | None = None
    redis_timeout_s: float = 0.25
    thought_cache_ttl_s: int = 7 * 24 * 3600
    thought_cache_size: int = 10_000

    # Thought worker (any OpenAI-compatible server; vLLM in production).
    thinker_url: str | None = None
    thinker_model: str | None = None
    thinker_api_key: str | None = None
    thinker_timeout_s: float = 60.0
    thinker_max_connections: int = 64
    think_profile: Literal["hyde", "o1", "query2doc"] = "hyde"
    think_default: bool | None = None
    # Overrides of the profile's reference prompt and sampling parameters (unset = the reference values).
    think_prompt: str | None = None
    think_n: int | None = Field(default=None, ge=1, le=32)
    think_temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    think_top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    think_max_tokens: int | None = Field(default=None, ge=1)
    # O1 profile: the end-of-sequence text appended to each thought before `<emb>`.
    think_eos: str = "<|endoftext|>"
    # Query2doc profile: what joins the query and the pseudo-document.
    query2doc_separator: str = " [SEP] "
    # Default latency budget of a search; past it a search answers in direct mode (degraded).
    search_deadline_ms: int = Field(default=10_000, ge=1)
    # Hybrid retrieval (dense + BM25, fused in the engine): the fusion, RRF's k, and candidates taken from each side.
    search_fusion: Literal["rrf", "dbsf"] = "rrf"
    search_rrf_k: int = Field(default=60, ge=1)
    search_hybrid_prefetch: int = Field(default=100, ge=1, le=10_000)
    # Rank fusion of a think search (a collection's think policy): candidates taken from the direct and the think
    # list each before the weighted reciprocal-rank fusion.
    search_rank_depth: int = Field(default=50, ge=1, le=1000)

    # Embedder: an OpenAI-compatible /v1/embeddings server, or in-process sentence-transformers.
    embedder_url: str | None = None
    embedder_model: str | None = None
    embedder_api_key: str | None = None
    embedder_timeout_s: float = 30.0
    # Texts per forward pass (in-process) or per request (server). 16 measured fastest for MiniLM on 2 CPU cores
    # (less padding) and keeps the peak RSS lower than 32 or 64.
    embedder_batch_size: int = Field(default=16, ge=1)
    # In-process embedder: torch threads of the document lane (ingestion); 0 = torch's default (one per core). The
    # query lane always runs one thread (measured ~3x faster per cold search beside vLLM, docs/decisions.md).
    embedder_threads: int = Field(default=0, ge=0)
    # In-process embedder: `onnx` (ONNX Runtime, no torch in the process; the model exported once by `thinksearch
    # export-onnx` into EMBEDDER_ONNX_DIR) or `torch` (sentence-transformers; the `torch` extra). Same vectors.
    embedder_backend: Literal["onnx", "torch"] = "onnx"
    # Threads of the in-process query lane (1 measured fastest beside the document lane on 2 cores).
    embedder_query_threads: int = Field(default=1, ge=0)
    # The exported ONNX model's folder; unset: ~/.cache/thinksearch/onnx/all-MiniLM-L6-v2 (the export's default).
    embedder_onnx_dir: str | None = None
    # Tokens a remote embedder reads (special tokens included), for chunking and truncation counts; the in-process
    # model reports its own (MiniLM: 256).
    embedder_max_tokens: int = Field(default=256, ge=8)

    # Auth: {"key": ["search", ...], "sha256:<hex of the key's SHA-256>": {"scopes": [...], "name": ...,
    # "rate_limits": {...}}}; empty = open (development). Hashed entries keep raw keys out of the configuration.
    api_keys: dict[str, Grant] = Field(default_factory=dict)
    # Who sees the service's own pages: /metrics (open, admin: an admin key, or off: 404), the OpenAPI docs
    # (/docs, /redoc, /openapi.json) and the console (/ui): open or off.
    metrics_access: Literal["open", "admin", "off"] = "open"
    docs_access: Literal["open", "off"] = "open"
    console_access: Literal["open", "off"] = "open"

    # --- Under pressure: rate limits, shutdown, logs ---
    # Token buckets per API key (per client address when open), by the scope a route needs; a scope not listed is
    # unlimited. Shared through REDIS_URL by every replica; each replica's own buckets when Redis is absent or down.
    rate_limits: dict[Scope, RateLimit] = Field(default_factory=dict)
    # On SIGTERM: /readyz answers 503 at once and requests are still served for SHUTDOWN_DRAIN_S (load balancers
    # take the replica out); then no new connections, and in-flight requests get SHUTDOWN_GRACE_S to finish.
    shutdown_drain_s: float = Field(default=5.0, ge=0)
    shutdown_grace_s: float = Field(default=30.0, ge=0)
    # Across replicas (with REDIS_URL): a lease per cold query's thought key, renewed while the worker answers, so a
    # dead holder's lease lapses within this time and a waiting replica takes the work over.
    coalesce_lease_ms: int = Field(default=3000, ge=100)
    # Per replica: at most this many worker requests in flight; past it a search answers direct (degraded, reason
    # thinker_overloaded) instead of queueing. Generations that outlive their search's deadline go on in the
    # background to fill the cache, at most THINK_MAX_BACKGROUND at once; past it they are cancelled (counted).
    think_max_in_flight: int = Field(default=64, ge=1)
    think_max_background: int = Field(default=64, ge=0)
    # Stream the n choices from the worker and embed each as it finishes (overlaps embedding with generation).
    # Off by default: measured not to pay on the reference setup (docs/decisions.md).
    think_stream: bool = False
    # Circuit breakers: after this many consecutive failures a dependency is not called for BREAKER_RESET_S, then
    # probed again by the next call.
    breaker_threshold: int = Field(default=5, ge=1)
    breaker_reset_s: float = Field(default=10.0, gt=0)
    # `text` for a terminal, `json` (one object per line) for log pipelines; queries are logged only if asked.
    log_format: Literal["text", "json"] = "text"
    log_queries: bool = False

    # HTTP connections (service/cli.py, service/api/middleware.py). The request line and headers must arrive within
    # HTTP_HEADER_TIMEOUT_S of the connection opening or of the request's first byte (else 408 and closed); a body
    # chunk within HTTP_BODY_TIMEOUT_S of the last one (else 408); an idle keep-alive connection is closed after
    # HTTP_KEEP_ALIVE_TIMEOUT_S. Past HTTP_MAX_HEADER_BYTES of request line and headers, or HTTP_MAX_HEADERS header
    # lines: 431. Past HTTP_MAX_CONCURRENCY open connections or requests in flight: 503 (unset: no limit).
    http_header_timeout_s: float = Field(default=10.0, gt=0)
    http_body_timeout_s: float = Field(default=30.0, gt=0)
    http_keep_alive_timeout_s: float = Field(default=5.0, gt=0)
    http_max_header_bytes: int = Field(default=32 * 1024, ge=1024)
    http_max_headers: int = Field(default=100, ge=8)
    http_max_concurrency: int | None = Field(default=1024, ge=1)

    # Request limits.
    max_body_bytes: int = 16 * 1024 * 1024
    max_documents_per_request: int = 1000
    max_text_chars: int = 100_000
    max_metadata_bytes: int = 16 * 1024
    max_query_chars: int = 8000
    max_top_k: int = 100

    # --- search speed (issue 6) ---
    # Query-side embeddings of direct-mode texts, in process (see docs/decisions.md): entries, about 1.5 KB each.
    query_vector_cache_size: int = Field(default=10_000, ge=0)
    # Queries per POST .../search/batch, and the characters of all of its queries together (one embedder call).
    max_batch_queries: int = Field(default=64, ge=1)
    max_batch_query_chars: int = Field(default=16_000, ge=1)
    # Warming: queries per POST .../warm (one job), and worker requests kept in flight while warming.
    max_warm_queries_per_request: int = Field(default=10_000, ge=1)
    warm_concurrency: int = Field(default=8, ge=1)
    # --- Bulk ingestion (issue 5): queue, jobs, workers. With REDIS_URL: Redis Streams, durable; else in-process.
    # Documents per queue read / embed batch / Qdrant write of a worker.
    ingest_batch_size: int = Field(default=64, ge=1)
    # Embed batches in flight at once: 1 suits the in-process model (one owner thread); more suit a remote server.
    ingest_embed_concurrency: int | None = Field(default=None, ge=1)
    # Past this many queued documents, new bulk jobs get 429 (Retry-After: ingest_retry_after_s), and an upload
    # that fills the queue while it streams is cut there (429, its job failed).
    ingest_queue_max: int = Field(default=1_000_000, ge=1)
    # One bulk upload's body: past it the upload is cut (413, its job failed).
    max_upload_bytes: int = Field(default=4 * 1024**3, ge=1024)
    # An entry handed to workers this many times without being acknowledged (it kills them) goes to the
    # dead-letter stream, as a failed line of its job.
    ingest_max_deliveries: int = Field(default=5, ge=1)
    ingest_retry_after_s: int = Field(default=30, ge=1)
    # Entries a dead worker left pending are claimed by another after this idle time (XAUTOCLAIM).
    ingest_claim_idle_s: float = Field(default=60.0, gt=0)
    # Errors kept per job (all are counted); jobs kept per collection listing; job records' lifetime in Redis.
    ingest_max_errors: int = Field(default=100, ge=0)
    ingest_job_ttl_s: int = Field(default=7 * 24 * 3600, ge=60)
    # Run a worker inside the gateway (turn off where separate `thinksearch worker` processes do the work).
    ingest_worker: bool = True
    # Redis timeout for queue operations (longer than the cache's: a 202 waits on them).
    ingest_redis_timeout_s: float = Field(default=5.0, gt=0)

    @field_validator("api_keys", mode="before")
    @classmethod
    def _api_keys(cls, value: Any) -> Any:
        """Each entry checked on its own, its errors naming it by number: an entry's key may be a raw API key (a
        typo in a scope must not print it), so neither the key nor the input appears in the message."""
        if not isinstance(value, dict):
            return value  # the field's own validation says what is wrong, without the input
        checked: dict[str, Grant] = {}
        for number, (key, grant) in enumerate(value.items(), start=1):
            if not isinstance(key, str):
                raise ValueError(f"API_KEYS entry {number}: the key must be a string")
            try:
                checked[key] = _GRANT.validate_python(grant)
            except ValidationError as exc:
                reasons = "; ".join(_grant_error(e) for e in exc.errors(include_input=False, include_url=False)[:4])
                raise ValueError(f"API_KEYS entry {number} (keys are not shown): {reasons}") from None
        return checked

    @model_validator(mode="after")
    def _default_think(self) -> Settings:
        if self.think_default is None:
            self.think_default = self.thinker_url is not None
        return self


@lru_cache
def get_settings() -> Settings:
    return Settings()
