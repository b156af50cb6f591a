"""App factory and lifespan: every shared client is created here and closed here."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from service import __version__
from service.api.auth import KeyRing
from service.api.middleware import BodySizeLimitMiddleware, RequestContextMiddleware
from service.api.problems import RETRY_AFTER_S, install_problem_handlers, problem_response
from service.api.routes import aliases, bulk, collections, documents, health, jobs, keys, search, snapshots, tune, ui
from service.model.errors import (
    AliasConflict,
    CollectionExists,
    CollectionNotFound,
    DependencyUnavailable,
    JobNotFound,
    KeysUnavailable,
    PolicyRejected,
    QueueFull,
    StoreRejected,
    UploadTooLarge,
    VectorMismatch,
)
from service.observability import tracing
from service.settings import Settings, get_settings
from service.wiring import Services, open_services

log = logging.getLogger("thinksearch")


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
        PolicyRejected: handler(422, lambda e: f"think: {e}"),
        KeysUnavailable: handler(409, lambda e: f"Keys cannot be managed here: {e}."),
        AliasConflict: handler(409, str),
        StoreRejected: handler(422, lambda e: f"The request cannot be stored or searched as given: {e}"),
        JobNotFound: handler(404, lambda e: f"Job '{str(e)[:80]}' does not exist (or has expired)."),
        # Every "a dependency is down" error: 503 with Retry-After, naming the dependency.
        DependencyUnavailable: handler(
            503, lambda e: f"{type(e).dependency[0].upper()}{type(e).dependency[1:]} is unavailable: {e}", retry=True
        ),
    }


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        tracing.setup()  # traces only if OTEL_EXPORTER_OTLP_ENDPOINT is set; before the clients that send traceparent
        try:
            services = await open_services(settings)
        except BaseException:
            tracing.shutdown()
            raise
        app.state.services = services
        if services.ingestion is not None:
            services.ingestion.start()
        if services.runtime_keys is not None:
            await services.runtime_keys.refresh()  # keys made before this replica started work from its first request
            services.runtime_keys.start()
        _log_startup(settings, services)
        try:
            yield
        finally:
            await services.aclose()
            tracing.shutdown()  # flushes the spans still queued

    docs = {} if settings.docs_access == "open" else {"docs_url": None, "redoc_url": None, "openapi_url": None}
    app = FastAPI(title="ThinkSearch", version=__version__, lifespan=lifespan, **docs)
    app.state.settings = settings
    app.state.keys = KeyRing(settings.api_keys)  # a malformed API_KEYS fails here, at startup
    app.state.draining = False
    install_problem_handlers(app)
    for exc_type, handle in _domain_error_handlers().items():
        app.add_exception_handler(exc_type, handle)

    async def queue_full(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, QueueFull)
        detail = f"The ingestion queue holds {settings.ingest_queue_max} documents or more; try again later."
        extensions = None
        if exc.job_id:  # cut while it streamed: its job failed; the whole upload is to be sent again later
            detail += f" The upload was cut at line {exc.line}; its job {exc.job_id} failed."
            extensions = {"job_id": exc.job_id, "line": exc.line}
        headers = {"Retry-After": str(settings.ingest_retry_after_s)}
        return problem_response(429, detail, headers=headers, extensions=extensions)

    async def upload_too_large(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, UploadTooLarge)
        detail = f"A bulk upload may carry {exc.limit} bytes; this one was cut at line {exc.line}"
        detail += f" (its job {exc.job_id} failed)."
        return problem_response(413, detail, extensions={"job_id": exc.job_id, "line": exc.line})

    app.add_exception_handler(QueueFull, queue_full)
    app.add_exception_handler(UploadTooLarge, upload_too_large)
    # Added last = outermost: even a 413 carries X-Request-ID.
    app.add_middleware(
        BodySizeLimitMiddleware, max_bytes=settings.max_body_bytes, exempt=f"{bulk.BULK_PATH}|{snapshots.RESTORE_PATH}"
    )
    app.add_middleware(RequestContextMiddleware)
    for module in (health, collections, aliases, documents, bulk, jobs, search, tune, keys, snapshots):
        app.include_router(module.router)
    if settings.console_access == "open":
        app.include_router(ui.router)  # the console at /ui
    return app
