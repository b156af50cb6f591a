"""The ingestion worker: read queued documents, embed, write, acknowledge.

Three stages joined by small bounded queues, so embedding never waits on the store: while batch n is written,
batch n+1 is embedded (and, with a remote embedder, several batches are embedded at once). An entry is
acknowledged only after its write returned (wait=true); a crash before that leaves it pending for another
worker to claim. Entries of cancelled or failed jobs are acknowledged without being written.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass

import numpy as np

from service.clients.embedder import Embedder
from service.documents.chunking import Chunker
from service.ingest.queue import Broker, Entry
from service.jobs.model import TERMINAL
from service.model.collections import ChunkingParams
from service.model.documents import DocumentIn, StoredDocument
from service.model.errors import (
    CollectionNotFound,
    EmbedderError,
    JobNotFound,
    QueueUnavailable,
    StoreUnavailable,
    VectorMismatch,
)
from service.model.profiles import ThinkProfile
from service.observability import metrics
from service.store.base import Store

log = logging.getLogger("thinksearch.ingest")
RETRY_S = 2.0  # pause before retrying a batch whose dependency failed (the entries stay pending meanwhile)


def consumer_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


@dataclass
class _Embedded:
    entries: list[Entry]  # every entry of the batch (all are acknowledged together)
    documents: dict[str, list[StoredDocument]]  # by collection, one per id (the last line wins), or its chunks
    vectors: dict[str, np.ndarray]
    truncated: dict[str, int]  # by job: documents embedded only up to the embedder's window


class IngestWorker:
    def __init__(
        self,
        broker: Broker,
        store: Store,
        embedder: Embedder,
        profile: ThinkProfile,
        chunker: Chunker,
        *,
        batch_size: int,
        embed_concurrency: int,
        embed_slice: int,
    ) -> None:
        self.broker = broker
        self.store = store
        self.embedder = embedder
        self.profile = profile
        self.chunker = chunker
        self.batch_size = batch_size
        self.embed_concurrency = embed_concurrency
        self.embed_slice = embed_slice
        self.consumer = consumer_name()
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = asyncio.Event()
        self._write_in_flight: asyncio.Future[None] | None = None

    def start(self) -> None:
        to_embed: asyncio.Queue[list[Entry]] = asyncio.Queue(maxsize=self.embed_concurrency)
        to_write: asyncio.Queue[_Embedded] = asyncio.Queue(maxsize=2)
        self._tasks = [asyncio.create_task(self._read(to_embed), name="ingest-read")]
        self._tasks += [
            asyncio.create_task(self._embed(to_embed, to_write), name=f"ingest-embed-{i}")
            for i in range(self.embed_concurrency)
        ]
        self._tasks.append(asyncio.create_task(self._write(to_write), name="ingest-write"))
        log.info(
            "ingest worker %s started (batch %d, %d embed batches in flight, queue %s)",
            self.consumer,
            self.batch_size,
            self.embed_concurrency,
            self.broker.name,
        )

    async def stop(self) -> None:
        """Stops reading; in-flight entries stay pending and are claimed again later (never lost)."""
        self._stopping.set()
        for task in self._tasks[:-1]:  # reader and embedders
            task.cancel()
        # A store write already started is let finish (bounded): its thread could not be stopped anyway.
        if self._write_in_flight is not None and not self._write_in_flight.done():
            await asyncio.wait([self._write_in_flight], timeout=30)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def wait(self) -> None:
        await asyncio.gather(*self._tasks)

    async def _read(self, out: asyncio.Queue[list[Entry]]) -> None:
        while not self._stopping.is_set():
            try:
                entries = await self.broker.read(self.consumer, self.batch_size, block_s=1.0)
            except QueueUnavailable as exc:
                log.warning("ingest queue unavailable: %s", exc)
                await asyncio.sleep(RETRY_S)
                continue
            if entries:
                await out.put(entries)

    async def _live(self, entries: list[Entry]) -> list[Entry]:
        """Drops (acknowledges unwritten) the entries of jobs that were cancelled or failed meanwhile."""
        statuses = {}
        for job_id in {e.job_id for e in entries}:
            try:
                statuses[job_id] = (await self.broker.get(job_id)).status
            except JobNotFound:  # job record gone (expired): its documents are still wanted
                statuses[job_id] = "running"
        dead = [e for e in entries if statuses[e.job_id] in TERMINAL and statuses[e.job_id] != "succeeded"]
        if dead:
            await self.broker.drop(dead)
        return [e for e in entries if e not in dead] if dead else entries

    async def _embed(self, inbox: asyncio.Queue[list[Entry]], out: asyncio.Queue[_Embedded]) -> None:
        while True:
            entries = await inbox.get()
            entries = await self._retrying(self._live, entries)
            if not entries:
                continue
            latest: dict[str, dict[str, StoredDocument]] = defaultdict(dict)
            ids = {}
            for e in entries:
                d = DocumentIn.model_validate_json(e.document)
                latest[e.collection][d.id] = StoredDocument(d.id, d.text, d.title, d.metadata)
                ids[e.entry_id] = d.id
            started = time.perf_counter()
            documents, vectors, truncated_ids = {}, {}, set()
            for collection, docs in latest.items():
                chunking = await self._chunking(collection)
                prepared = await asyncio.to_thread(self.chunker.prepare, list(docs.values()), chunking)
                documents[collection] = prepared.documents
                vectors[collection] = await self._embed_texts(prepared.texts)
                truncated_ids |= {(collection, i) for i in prepared.truncated}
                if chunking:
                    metrics.DOCUMENT_CHUNKS.labels("bulk").inc(len(prepared.documents))
            metrics.INGEST_STAGE_SECONDS.labels("embed").observe(time.perf_counter() - started)
            metrics.INGEST_BATCH_SIZE.observe(len(entries))
            truncated = Counter(e.job_id for e in entries if (e.collection, ids[e.entry_id]) in truncated_ids)
            metrics.DOCUMENTS_TRUNCATED.labels("bulk").inc(sum(truncated.values()))
            await out.put(_Embedded(entries, documents, vectors, dict(truncated)))

    async def _chunking(self, collection: str) -> ChunkingParams | None:
        try:
            return await self._retrying(self.store.chunking, collection)
        except CollectionNotFound:  # deleted meanwhile: the write stage fails the job
            return None

    async def _embed_texts(self, texts: list[str]) -> np.ndarray:
        """One slice at a time: the in-process model never holds more than a slice of documents in one encode
        call (bounded memory, prompt cancel); searches do not wait on it (their own embedder lane)."""
        parts = []
        for i in range(0, len(texts), self.embed_slice):
            parts.append(await self._retrying(self.embedder.embed, texts[i : i + self.embed_slice], documents=True))
        return np.concatenate(parts)

    async def _write(self, inbox: asyncio.Queue[_Embedded]) -> None:
        while True:
            batch = await inbox.get()
            entries = await self._retrying(self._live, batch.entries)  # a cancel during embedding: write nothing
            live = {e.entry_id for e in entries}
            started = time.perf_counter()
            for collection, docs in batch.documents.items():
                if not any(e.collection == collection for e in entries):
                    continue
                try:
                    self._write_in_flight = asyncio.ensure_future(
                        self._retrying(self.store.write_batch, collection, docs, batch.vectors[collection])
                    )
                    await asyncio.shield(self._write_in_flight)
                except (CollectionNotFound, VectorMismatch) as exc:
                    # Nothing a retry can fix: the job fails, its remaining entries are dropped.
                    reason = "collection was deleted" if isinstance(exc, CollectionNotFound) else str(exc)
                    failed = [e for e in entries if e.collection == collection]
                    for job_id in {e.job_id for e in failed}:
                        await self._retrying(self.broker.fail, job_id, f"write failed: {reason}")
                    await self._retrying(self.broker.drop, failed)
                    live -= {e.entry_id for e in failed}
            metrics.INGEST_STAGE_SECONDS.labels("write").observe(time.perf_counter() - started)
            written = [e for e in entries if e.entry_id in live]
            await self._retrying(self.broker.complete, written, batch.truncated)
            metrics.INGEST_DOCUMENTS.labels("ingested").inc(len(written))

    async def _retrying(self, fn, *args, **kwargs):
        """Transient failures (queue, store or embedder down) pause the batch and retry it; nothing is lost."""
        while True:
            try:
                return await fn(*args, **kwargs)
            except (QueueUnavailable, StoreUnavailable, EmbedderError) as exc:
                log.warning("ingest batch waits on a dependency: %s", exc)
                await asyncio.sleep(RETRY_S)
