"""App factory and lifespan: every shared client is created here and closed here."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from service import __version__
from service.api import bulk, collections, documents, health, jobs, search
from service.api.auth import KeyRing
from service.api.middleware import BodySizeLimitMiddleware, RequestContextMiddleware
from service.api.problems import RETRY_AFTER_S, install_problem_handlers, problem_response
from service.catalog import Catalog
from service.clients.breakers import Breakers
from service.clients.cache import ThoughtCache, make_thought_cache
from service.clients.embedder import Embedder, EmbedderError, make_embedder
from service.clients.leases import Leases, make_leases
from service.clients.ratelimit import RateLimiter
from service.clients.thinker import ThinkerClient, ThinkerError
from service.clients.vectorstore import (
    CollectionExists,
    CollectionNotFound,
    Store,
    StoreUnavailable,
    VectorMismatch,
    open_store,
)
from service.ingest.broker import JobNotFound, QueueFull, QueueUnavailable
from service.ingest.chunking import make_chunker
from service.ingest.service import Ingestion, make_broker, make_worker
from service.search.coalescing import AcrossReplicas
from service.search.pipeline import SearchPipeline
from service.search.warming import Warming
from service.search.profiles import make_profile
from service.settings import Settings, get_settings

log = logging.getLogger("thinksearch")


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
    ingestion: Ingestion | None = None  # bulk ingestion (issue 5)
    warming: Warming | None = None  # warming jobs (issue 6)

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
            broker = self.ingestion.broker

            async def ingest_queue() -> str:
                await broker.ping()
                return broker.name + ("" if broker.durable else " (in-process, not durable)")

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
        if self.warming is not None:
            await self.warming.aclose()
        await self.pipeline.aclose()
        for client in (self.thinker, self.cache, self.limiter, self.leases, self.embedder, self.store):
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
    )


async def open_services(settings: Settings) -> Services:
    breakers = Breakers(threshold=settings.breaker_threshold, reset_s=settings.breaker_reset_s)
    store = open_vector_store(settings, breakers)
    embedder = await open_embedder(settings, breakers)
    cache = make_thought_cache(
        settings.redis_url,
        ttl_s=settings.thought_cache_ttl_s,
        size=settings.thought_cache_size,
        timeout_s=settings.redis_timeout_s,
        breakers=breakers,
    )
    leases = make_leases(settings.redis_url, timeout_s=settings.redis_timeout_s)
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
    broker = make_broker(settings)
    worker = make_worker(settings, broker, store, embedder, profile) if settings.ingest_worker else None
    pipeline = SearchPipeline(settings, profile, thinker, cache, embedder, store, replicas)
    return Services(
        settings=settings,
        store=store,
        embedder=embedder,
        cache=cache,
        thinker=thinker,
        catalog=Catalog(store, embedder, profile, make_chunker(embedder, profile, settings.embedder_max_tokens)),
        pipeline=pipeline,
        leases=leases,
        limiter=RateLimiter(settings.redis_url, timeout_s=settings.redis_timeout_s),
        breakers=breakers,
        ingestion=Ingestion(settings, broker, store, worker),
        warming=Warming(pipeline, broker, settings.warm_concurrency),
    )


def _log_startup(settings: Settings, services: Services) -> None:
    log.info(
        "ThinkSearch %s: profile=%s think_default=%s thinker=%s embedder=%s store=%s cache=%s",
        __version__,
        settings.think_profile,
        settings.think_default,
        settings.thinker_url or "off",
        services.embedder.name,
        settings.qdrant_url or f"embedded:{settings.qdrant_path}",
        services.cache.name,
    )
    if not settings.api_keys:
        log.warning("No API_KEYS configured: the API is open to anyone who can reach it (development mode).")
    if settings.rate_limits:
        log.info("Rate limits by scope: %s (buckets in %s)", settings.rate_limits, services.limiter.name)


def _domain_error_handlers() -> dict[type[Exception], Callable[[Request, Exception], Awaitable[JSONResponse]]]:
    def handler(status: int, detail: Callable[[Exception], str], retry: bool = False):
        async def handle(_: Request, exc: Exception) -> JSONResponse:
            headers = {"Retry-After": str(RETRY_AFTER_S)} if retry else None
            return problem_response(status, detail(exc), headers=headers)

        return handle

    return {
        CollectionNotFound: handler(404, lambda e: f"Collection '{e}' does not exist."),
        CollectionExists: handler(409, lambda e: f"Collection '{e}' already exists."),
        VectorMismatch: handler(409, lambda e: f"The collection was built with another embedder: {e}"),
        StoreUnavailable: handler(503, lambda e: f"The vector store is unavailable: {e}", retry=True),
        EmbedderError: handler(503, lambda e: f"The embedder is unavailable: {e}", retry=True),
        JobNotFound: handler(404, lambda e: f"Job '{str(e)[:80]}' does not exist (or has expired)."),
        QueueUnavailable: handler(503, lambda e: f"The ingestion queue is unavailable: {e}", retry=True),
    }


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        services = await open_services(settings)
        app.state.services = services
        if services.ingestion is not None:
            services.ingestion.start()
        _log_startup(settings, services)
        try:
            yield
        finally:
            await services.aclose()

    app = FastAPI(title="ThinkSearch", version=__version__, lifespan=lifespan)
    app.state.settings = settings
    app.state.keys = KeyRing(settings.api_keys)  # a malformed API_KEYS fails here, at startup
    app.state.draining = False
    install_problem_handlers(app)
    for exc_type, handle in _domain_error_handlers().items():
        app.add_exception_handler(exc_type, handle)

    async def queue_full(_: Request, __: Exception) -> JSONResponse:
        detail = f"The ingestion queue holds {settings.ingest_queue_max} documents or more; try again later."
        return problem_response(429, detail, headers={"Retry-After": str(settings.ingest_retry_after_s)})

    app.add_exception_handler(QueueFull, queue_full)
    # Added last = outermost: even a 413 carries X-Request-ID.
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=settings.max_body_bytes, exempt=bulk.BULK_PATH)
    app.add_middleware(RequestContextMiddleware)
    for module in (health, collections, documents, bulk, jobs, search):
        app.include_router(module.router)
    return app
