"""Bulk ingestion as the gateway sees it: accept an NDJSON stream into a job, answer job queries, run the
in-process worker, and publish queue metrics."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import AsyncIterable, AsyncIterator

from service.ingest.ndjson import Accepted, max_line_bytes, parse_line, split_lines
from service.ingest.queue import Broker
from service.ingest.worker import IngestWorker
from service.jobs.model import JOB_STATUSES, Job
from service.model.errors import CollectionNotFound, QueueFull, UploadTooLarge
from service.observability import metrics
from service.settings import Settings
from service.store.base import Store

log = logging.getLogger("thinksearch.ingest")
ENQUEUE_BATCH = 500  # lines per XADD pipeline: few round trips, bounded memory
STATS_INTERVAL_S = 5.0


async def publish_stats(broker: Broker) -> None:
    """Queue gauges and jobs by status, refreshed every few seconds (Redis: as every replica sees them)."""
    while True:
        with contextlib.suppress(Exception):
            stats = await broker.stats()
            metrics.INGEST_QUEUE_LENGTH.set(stats.length)
            metrics.INGEST_OLDEST_PENDING.set(stats.oldest_pending_s)
            metrics.INGEST_CONSUMER_LAG.set(stats.lag)
            counts = Counter(j.status for j in await broker.list(None, 1000) if j.kind == "ingest")
            for status in JOB_STATUSES:
                metrics.INGEST_JOBS.labels(status).set(counts.get(status, 0))
        await asyncio.sleep(STATS_INTERVAL_S)


class Ingestion:
    def __init__(self, settings: Settings, broker: Broker, store: Store, worker: IngestWorker | None) -> None:
        self.settings = settings
        self.broker = broker
        self.store = store
        self.worker = worker
        self._stats: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self.worker is not None:
            self.worker.start()
        self._stats = asyncio.create_task(publish_stats(self.broker), name="ingest-stats")

    async def submit(self, collection: str, body: AsyncIterable[bytes]) -> Job:
        """Reads the whole upload, queueing valid lines as it goes; returns once all of them are queued."""
        if not await self.store.exists(collection):  # 404 before anything is queued
            raise CollectionNotFound(collection)
        job = await self.broker.create_job(collection)  # QueueFull -> 429, QueueUnavailable -> 503
        limit = max_line_bytes(self.settings)
        total = rejected = 0
        errors: list[dict] = []
        pending: list[tuple[int, str]] = []
        try:
            async for number, raw in split_lines(self._bounded(body, job.job_id), limit):
                total += 1
                result = parse_line(number, raw, self.settings, limit)
                if isinstance(result, Accepted):
                    pending.append((result.line, result.document.model_dump_json()))
                    if len(pending) >= ENQUEUE_BATCH:
                        await self._enqueue(job.job_id, collection, pending)
                        pending = []
                    continue
                rejected += 1
                if len(errors) < self.settings.ingest_max_errors:
                    errors.append({"line": result.line, "id": result.id, "error": result.error})
            if pending:
                await self._enqueue(job.job_id, collection, pending)
            await self.broker.seal(job.job_id, total=total, rejected=rejected, errors=errors)
        except (QueueFull, UploadTooLarge) as exc:
            exc.line = total
            cause = "the ingestion queue is full" if isinstance(exc, QueueFull) else "the upload is too large"
            with contextlib.suppress(Exception):
                await self.broker.fail(job.job_id, f"upload cut at line {total}: {cause}; send it again later")
            raise
        except BaseException as exc:
            # Client gone or queue down mid-upload: the job fails (workers drop what it had queued).
            with contextlib.suppress(Exception):
                await self.broker.fail(job.job_id, f"upload interrupted after line {total}: {exc!r}")
            raise
        finally:
            metrics.INGEST_DOCUMENTS.labels("rejected").inc(rejected)
        log.info("bulk job %s: %d lines, %d queued, %d rejected", job.job_id, total, total - rejected, rejected)
        return job

    async def _enqueue(self, job_id: str, collection: str, items: list[tuple[int, str]]) -> None:
        """The queue limit holds while an upload streams, not only when it starts: past it the upload is cut."""
        if await self.broker.queued() + len(items) > self.settings.ingest_queue_max:
            raise QueueFull(job_id, items[0][0])
        await self.broker.enqueue(job_id, collection, items)

    async def _bounded(self, body: AsyncIterable[bytes], job_id: str) -> AsyncIterator[bytes]:
        received = 0
        async for chunk in body:
            received += len(chunk)
            if received > self.settings.max_upload_bytes:
                raise UploadTooLarge(job_id, self.settings.max_upload_bytes)
            yield chunk

    async def aclose(self) -> None:
        if self._stats is not None:
            self._stats.cancel()
        if self.worker is not None:
            await self.worker.stop()
        await self.broker.aclose()
