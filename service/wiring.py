"""Wiring: every shared client and service object, built from the settings and closed in reverse.

The gateway (service/app.py) and the worker process (service/worker_process.py) build what they need here, so a
setting means the same thing in both.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from service.access.keys import RuntimeKeys
from service.clients.breakers import Breakers
from service.clients.embedder import Embedder, make_embedder
from service.clients.remote_embedder import RemoteEmbedder
from service.clients.thinker import ThinkerClient, ThinkerError
from service.documents.aliases import Aliases
from service.documents.catalog import Catalog
from service.documents.chunking import Chunker, make_chunker
from service.documents.policies import Policies
from service.ingest.ingestion import Ingestion
from service.ingest.memory_queue import MemoryBroker
from service.ingest.queue import Broker
from service.ingest.redis_queue import RedisBroker
from service.ingest.worker import IngestWorker
from service.model.profiles import ThinkProfile, make_profile
from service.redis.cache import ThoughtCache, make_thought_cache
from service.redis.keys import KeyTable
from service.redis.leases import Leases, make_leases
from service.redis.pool import RedisPools
from service.redis.ratelimit import RateLimiter
from service.search.coalescing import AcrossReplicas
from service.search.pipeline import SearchPipeline
from service.search.tune_jobs import TuneJobs
from service.search.tuning import Tuner
from service.search.warming import Warming
from service.settings import Settings
from service.snapshots.library import SnapshotLibrary
from service.snapshots.restore_jobs import RestoreJobs
from service.store.base import Store
from service.store.factory import open_aliases, open_store
from service.store.snapshot_backends import snapshot_backend


@dataclass
class Services:
    settings: Settings
    store: Store
    embedder: Embedder
    cache: ThoughtCache
    thinker: ThinkerClient | None
    catalog: Catalog
    pipeline: SearchPipeline
    limiter: RateLimiter
    leases: Leases
    breakers: Breakers
    ingestion: Ingestion | None = None
    warming: Warming | None = None
    tuning: TuneJobs | None = None
    aliases: Aliases | None = None
    runtime_keys: RuntimeKeys | None = None
    snapshots: SnapshotLibrary | None = None
    restores: RestoreJobs | None = None
    redis: RedisPools | None = None  # the Redis connections of the clients above; closed after them

    def probes(self) -> dict[str, Callable[[], Awaitable[str | None]]]:
        """Readiness checks by dependency name (see /readyz)."""

        async def store() -> str:
            await self.store.ping()
            return "qdrant " + (self.settings.qdrant_url or f"embedded ({self.settings.qdrant_path})")

        async def embedder() -> str:
            await self.embedder.ping()
            return self.embedder.name

        async def cache() -> str:
            await self.cache.ping()
            return self.cache.name

        checks = {"vector_store": store, "embedder": embedder, "thought_cache": cache}
        if self.ingestion is not None:
            broker, worker = self.ingestion.broker, self.ingestion.worker

            async def ingest_queue() -> str:
                await broker.ping()
                detail = broker.name + ("" if broker.durable else " (in-process, not durable)")
                if worker is not None:
                    detail += f"; worker {worker.health()}"  # raises while a worker stage is down
                return detail

            checks["ingest_queue"] = ingest_queue
        if self.thinker is not None:
            thinker = self.thinker

            async def think() -> str:
                await thinker.ping()
                return f"{self.settings.thinker_url} ({thinker.known_model or 'model not resolved'})"

            checks["thinker"] = think
        return checks

    async def aclose(self) -> None:
        if self.ingestion is not None:
            with contextlib.suppress(Exception):
                await self.ingestion.aclose()
        for jobs in (self.warming, self.tuning, self.restores):
            if jobs is not None:
                await jobs.aclose()
        await self.pipeline.aclose()
        if self.runtime_keys is not None:
            await self.runtime_keys.aclose()
        for client in (self.thinker, self.cache, self.limiter, self.leases, self.embedder, self.store, self.redis):
            if client is not None:
                with contextlib.suppress(Exception):
                    await client.aclose()


def open_vector_store(settings: Settings, breakers: Breakers | None = None) -> Store:
    return open_store(
        url=settings.qdrant_url,
        api_key=settings.qdrant_api_key,
        path=settings.qdrant_path,
        timeout_s=settings.qdrant_timeout_s,
        embedded=settings.qdrant_embedded,
        edge_index_threshold=settings.qdrant_edge_index_threshold,
        breakers=breakers,
    )


async def open_embedder(settings: Settings, breakers: Breakers | None = None) -> Embedder:
    # Loading a local model blocks for seconds: keep it off the event loop.
    return await asyncio.to_thread(
        make_embedder,
        settings.embedder_url,
        model=settings.embedder_model,
        api_key=settings.embedder_api_key,
        timeout_s=settings.embedder_timeout_s,
        batch_size=settings.embedder_batch_size,
        breakers=breakers,
        threads=settings.embedder_threads,
        backend=settings.embedder_backend,
        query_threads=settings.embedder_query_threads,
        onnx_dir=settings.embedder_onnx_dir,
    )


async def open_services(settings: Settings) -> Services:
    breakers = Breakers(threshold=settings.breaker_threshold, reset_s=settings.breaker_reset_s)
    store = open_vector_store(settings, breakers)
    embedder = await open_embedder(settings, breakers)
    redis = open_redis(settings)
    shared = redis.client() if redis is not None else None
    cache = make_thought_cache(
        shared, ttl_s=settings.thought_cache_ttl_s, size=settings.thought_cache_size, breakers=breakers
    )
    leases = make_leases(shared)
    replicas = AcrossReplicas(leases, lease_ms=settings.coalesce_lease_ms)
    thinker = None
    if settings.thinker_url:
        thinker = ThinkerClient(
            settings.thinker_url,
            model=settings.thinker_model,
            api_key=settings.thinker_api_key,
            timeout_s=settings.thinker_timeout_s,
            max_connections=settings.thinker_max_connections,
            breakers=breakers,
        )
        # Best effort: a worker that is down at startup is asked again on the first search.
        with contextlib.suppress(ThinkerError, TimeoutError):
            await asyncio.wait_for(thinker.model(), 2.0)
    profile = make_profile(settings)
    # Bulk ingestion: the gateway's own worker unless separate `thinksearch worker` processes do the work.
    broker = make_broker(settings, redis)
    chunker = make_chunker(embedder, profile, settings.embedder_max_tokens)  # one for the catalog and the worker
    worker = make_worker(settings, broker, store, embedder, profile, chunker) if settings.ingest_worker else None
    policies = Policies(settings, store)
    pipeline = SearchPipeline(settings, policies, thinker, cache, embedder, store, replicas)
    aliases = Aliases(open_aliases(store), store)
    catalog = Catalog(store, embedder, profile, chunker, policies, aliases)
    snapshots = open_snapshots(settings, store, embedder.dimension)
    return Services(
        settings=settings,
        store=store,
        embedder=embedder,
        cache=cache,
        thinker=thinker,
        catalog=catalog,
        aliases=aliases,
        pipeline=pipeline,
        leases=leases,
        limiter=RateLimiter(shared),
        breakers=breakers,
        ingestion=Ingestion(settings, broker, store, worker),
        warming=Warming(pipeline, broker, settings.warm_concurrency),
        tuning=TuneJobs(Tuner(pipeline, catalog), broker),
        runtime_keys=open_runtime_keys(settings, redis),
        snapshots=snapshots,
        restores=RestoreJobs(snapshots, broker),
        redis=redis,
    )


def open_snapshots(
    settings: Settings, store: Store, dimension: Callable[[], Awaitable[int]] | None
) -> SnapshotLibrary:
    """The snapshot folder: SNAPSHOT_PATH, or `snapshots` beside the embedded store's folder."""
    root = settings.snapshot_path
    if root is None:
        parent = Path("./data") if settings.qdrant_path == ":memory:" else Path(settings.qdrant_path).parent
        root = str(parent / "snapshots")
    backend = snapshot_backend(store, url=settings.qdrant_url, api_key=settings.qdrant_api_key)
    library = SnapshotLibrary(root, backend, dimension=dimension)
    library.forget_work()  # what a crash left of snapshots being made or uploads being received, a day on
    return library


def open_runtime_keys(settings: Settings, redis: RedisPools | None) -> RuntimeKeys:
    """Keys created at run time live in Redis, beside API_KEYS: an open service (no API_KEYS) has none, since there
    every caller is an admin already and the first key created would lock everyone else out."""
    if not settings.api_keys:
        return RuntimeKeys(None, "the service is open (no API_KEYS): configure an admin key in API_KEYS first")
    if redis is None:
        return RuntimeKeys(None, "keys are managed at run time only with Redis (REDIS_URL)")
    return RuntimeKeys(KeyTable(redis.client()))


def open_redis(settings: Settings) -> RedisPools | None:
    """The process' Redis connections (None without REDIS_URL); whoever opens them closes them last."""
    if not settings.redis_url:
        return None
    return RedisPools(
        settings.redis_url, timeout_s=settings.redis_timeout_s, streams_timeout_s=settings.ingest_redis_timeout_s
    )


def make_broker(settings: Settings, redis: RedisPools | None) -> Broker:
    if redis is not None:
        return RedisBroker(
            redis.streams(),
            queue_max=settings.ingest_queue_max,
            claim_idle_s=settings.ingest_claim_idle_s,
            max_errors=settings.ingest_max_errors,
            job_ttl_s=settings.ingest_job_ttl_s,
            max_deliveries=settings.ingest_max_deliveries,
        )
    return MemoryBroker(
        queue_max=settings.ingest_queue_max,
        max_errors=settings.ingest_max_errors,
        claim_idle_s=settings.ingest_claim_idle_s,
        max_deliveries=settings.ingest_max_deliveries,
    )


def make_worker(
    settings: Settings,
    broker: Broker,
    store: Store,
    embedder: Embedder,
    profile: ThinkProfile,
    chunker: Chunker | None = None,
) -> IngestWorker:
    # The in-process model has one owner thread: one batch at a time, the next one queued behind it. A remote
    # embedder serves several requests at once, so there several batches are in flight.
    remote = isinstance(embedder, RemoteEmbedder)
    default = 4 if remote else 1
    return IngestWorker(
        broker,
        store,
        embedder,
        profile,
        chunker or make_chunker(embedder, profile, settings.embedder_max_tokens),
        batch_size=settings.ingest_batch_size,
        embed_concurrency=settings.ingest_embed_concurrency or default,
        # In-process: one forward batch per call (queries have a lane of their own in the embedder; small calls
        # keep a cancel or a stop prompt and the model's peak memory low).
        embed_slice=settings.ingest_batch_size if remote else settings.embedder_batch_size,
    )
