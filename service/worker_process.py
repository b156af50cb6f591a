"""`thinksearch worker`: ingestion workers as their own process (one consumer of the Redis group each)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

from prometheus_client import start_http_server

from service.ingest.ingestion import publish_stats
from service.model.profiles import make_profile
from service.observability import tracing
from service.settings import Settings
from service.wiring import make_broker, make_worker, open_embedder, open_redis, open_vector_store

log = logging.getLogger("thinksearch.ingest")


def refusal(settings: Settings) -> str | None:
    """Why this configuration cannot run a separate worker, or None."""
    if not settings.qdrant_url:
        return (
            "thinksearch worker needs QDRANT_URL: the embedded store (QDRANT_PATH) is owned by one process, the "
            "gateway, whose in-process worker is its only writer. Point QDRANT_URL at a Qdrant server to run "
            "separate workers."
        )
    if not settings.redis_url:
        return "thinksearch worker needs REDIS_URL: without Redis the queue lives inside the gateway process."
    return None


async def run_worker(settings: Settings, metrics_port: int | None = None) -> None:
    if metrics_port:
        start_http_server(metrics_port, addr=settings.host)
    tracing.setup()  # a trace per batch, only if OTEL_EXPORTER_OTLP_ENDPOINT is set
    store = open_vector_store(settings)
    embedder = await open_embedder(settings)
    redis = open_redis(settings)
    broker = make_broker(settings, redis)
    worker = make_worker(settings, broker, store, embedder, make_profile(settings))
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    worker.start()
    stats = asyncio.create_task(publish_stats(broker))
    log.info("worker ready (store %s, embedder %s)", settings.qdrant_url, embedder.name)
    try:
        await stopping.wait()
    finally:
        log.info("worker stopping: unacknowledged entries stay pending for another worker")
        stats.cancel()
        await worker.stop()
        for client in (broker, embedder, store, redis):  # the pools last: the broker's client is on one
            if client is not None:
                with contextlib.suppress(Exception):
                    await client.aclose()
        tracing.shutdown()
