"""The ingestion worker: read queued documents, embed, write, acknowledge.

Three stages joined by small bounded queues, so embedding never waits on the store: while batch n is written,
batch n+1 is embedded (and, with a remote embedder, several batches are embedded at once). An entry is
acknowledged only after its write returned (wait=true); a crash before that leaves it pending for another
worker to claim. Entries of cancelled or failed jobs are acknowledged without being written.

One bad entry never stops the worker: a line that does not parse, or a document the store (or the embedder)
refuses, is written off alone as a failed line of its job (line, id, reason), and the rest of its batch goes on.
Only dependency failures are retried. A stage that still dies is restarted (counted, and shown by /readyz), and an
entry that keeps coming back across deliveries (it kills workers) is moved to the dead-letter stream by the broker.
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
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import numpy as np

from service.clients.embedder import Embedder
from service.documents.chunking import Chunker
from service.ingest.queue import Broker, Entry, LineFailure
from service.jobs.model import TERMINAL
from service.model.collections import ChunkingParams
from service.model.documents import DocumentIn, StoredDocument
from service.model.errors import (
    CollectionNotFound,
    EmbedderError,
    JobNotFound,
    QueueUnavailable,
    StoreRejected,
    StoreUnavailable,
    VectorMismatch,
)
from service.model.profiles import ThinkProfile
from service.observability import metrics, tracing
from service.store.base import Store

log = logging.getLogger("thinksearch.ingest")
RETRY_S = 2.0  # pause before retrying a batch whose dependency failed (the entries stay pending meanwhile)


def consumer_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


@dataclass
class _Embedded:
    entries: list[Entry]  # every entry of the batch still to acknowledge
    ids: dict[str, str]  # entry id -> its document's id
    documents: dict[str, list[StoredDocument]]  # by collection, one per id (the last line wins), or its chunks
    vectors: dict[str, np.ndarray]
    truncated: dict[str, int]  # by job: documents embedded only up to the embedder's window
    refused: dict[tuple[str, str], str] = field(default_factory=dict)  # (collection, document id) -> why
    trace: tracing.Batch = field(default_factory=tracing.Batch)  # the batch's trace (a stand-in while traces are off)


class _Refused(Exception):
    """One document the embedding stage could not take (not a dependency failure)."""


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
        self.restarts = 0  # stages restarted after an unexpected failure
        self._down: set[str] = set()  # stages between a failure and their restart

    def start(self) -> None:
        to_embed: asyncio.Queue[tuple[list[Entry], tracing.Batch]] = asyncio.Queue(maxsize=self.embed_concurrency)
        to_write: asyncio.Queue[_Embedded] = asyncio.Queue(maxsize=2)
        self._tasks = [self._supervised("read", lambda: self._read(to_embed))]
        self._tasks += [
            self._supervised(f"embed-{i}", lambda: self._embed(to_embed, to_write))
            for i in range(self.embed_concurrency)
        ]
        self._tasks.append(self._supervised("write", lambda: self._write(to_write)))
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

    def health(self) -> str:
        """For /readyz: raises while a stage is down (it is restarted within seconds)."""
        if self._down:
            raise RuntimeError(f"ingest worker stage(s) {sorted(self._down)} failed and are restarting")
        if any(t.done() for t in self._tasks) and not self._stopping.is_set():
            raise RuntimeError("the ingest worker stopped")
        return f"running ({self.restarts} restarts)" if self.restarts else "running"

    def _supervised(self, name: str, stage: Callable[[], Awaitable[None]]) -> asyncio.Task[None]:
        async def run() -> None:
            while not self._stopping.is_set():
                try:
                    await stage()
                    return
                except asyncio.CancelledError:
                    raise
                except Exception:
                    # A bug or an unforeseen input: the batch it held stays unacknowledged (delivered again, and
                    # dead-lettered if it keeps failing); the stage comes back instead of stopping all ingestion.
                    self.restarts += 1
                    self._down.add(name)
                    metrics.INGEST_WORKER_RESTARTS.labels(name.split("-")[0]).inc()
                    log.exception("ingest %s stage failed; restarting it in %.0f s", name, RETRY_S)
                    await asyncio.sleep(RETRY_S)
                    self._down.discard(name)

        return asyncio.create_task(run(), name=f"ingest-{name}")

    async def _read(self, out: asyncio.Queue[tuple[list[Entry], tracing.Batch]]) -> None:
        while not self._stopping.is_set():
            started = tracing.now_ns()
            try:
                entries = await self.broker.read(self.consumer, self.batch_size, block_s=1.0)
            except QueueUnavailable as exc:
                log.warning("ingest queue unavailable: %s", exc)
                await asyncio.sleep(RETRY_S)
                continue
            if entries:
                await out.put((entries, self._trace(entries, started)))

    def _trace(self, entries: list[Entry], started_ns: int) -> tracing.Batch:
        """A trace per batch (when traces are on): its read stage done, its embed and write stages to come."""
        attributes = {
            "thinksearch.ingest.consumer": self.consumer,
            "thinksearch.ingest.entries": len(entries),
            "thinksearch.ingest.collections": sorted({e.collection for e in entries}),
            "thinksearch.ingest.jobs": sorted({e.job_id for e in entries}),
        }
        trace = tracing.batch("ingest.batch", attributes, start_ns=started_ns)
        trace.record("read", started_ns, {"thinksearch.ingest.entries": len(entries)})
        return trace

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

    async def _embed(
        self, inbox: asyncio.Queue[tuple[list[Entry], tracing.Batch]], out: asyncio.Queue[_Embedded]
    ) -> None:
        while True:
            entries, trace = await inbox.get()
            with trace.stage("embed") as span:
                batch = await self._embed_batch(entries)
                span.set_attribute("thinksearch.ingest.documents", sum(len(d) for d in batch.documents.values()))
            if not batch.entries:
                trace.end({"thinksearch.ingest.written": 0})  # nothing left to write
                continue
            batch.trace = trace
            await out.put(batch)

    async def _embed_batch(self, entries: list[Entry]) -> _Embedded:
        """The batch's live, valid documents (or their chunks) with their vectors; no entries if none is left."""
        entries = await self._retrying(self._live, entries)
        entries, parsed = await self._parse(entries)
        if not entries:
            return _Embedded([], {}, {}, {}, {})
        latest: dict[str, dict[str, StoredDocument]] = defaultdict(dict)
        for e in entries:
            d = parsed[e.entry_id]
            latest[e.collection][d.id] = d
        started = time.perf_counter()
        batch = _Embedded(entries, {entry_id: d.id for entry_id, d in parsed.items()}, {}, {}, {})
        truncated_ids = set()
        for collection, docs in latest.items():
            chunking = await self._chunking(collection)
            documents, vectors, truncated, refused = await self._prepare(collection, list(docs.values()), chunking)
            batch.documents[collection], batch.vectors[collection] = documents, vectors
            truncated_ids |= {(collection, i) for i in truncated}
            batch.refused.update({(collection, i): why for i, why in refused.items()})
            if chunking:
                metrics.DOCUMENT_CHUNKS.labels("bulk").inc(len(documents))
        metrics.INGEST_STAGE_SECONDS.labels("embed").observe(time.perf_counter() - started)
        metrics.INGEST_BATCH_SIZE.observe(len(entries))
        counted = Counter(e.job_id for e in entries if (e.collection, batch.ids[e.entry_id]) in truncated_ids)
        batch.truncated = dict(counted)
        metrics.DOCUMENTS_TRUNCATED.labels("bulk").inc(sum(counted.values()))
        return batch

    async def _parse(self, entries: list[Entry]) -> tuple[list[Entry], dict[str, StoredDocument]]:
        """The entries whose line is a valid document; the others are written off as failed lines (a line queued by
        an older version, or damaged in the queue, must not stop the worker)."""
        documents, failures = {}, []
        for e in entries:
            try:
                d = DocumentIn.model_validate_json(e.document)
            except (ValueError, RecursionError) as exc:  # pydantic's ValidationError is a ValueError
                failures.append(LineFailure(e, None, f"invalid queued document: {str(exc)[:200]}"))
                continue
            documents[e.entry_id] = StoredDocument(d.id, d.text, d.title, d.metadata)
        if failures:
            await self._fail_lines(failures)
        return [e for e in entries if e.entry_id in documents], documents

    async def _prepare(
        self, collection: str, docs: list[StoredDocument], chunking: ChunkingParams | None
    ) -> tuple[list[StoredDocument], np.ndarray, set[str], dict[str, str]]:
        """(documents or chunks, their vectors, ids truncated, ids refused with why). A batch that fails for a
        reason of its own (not a dependency: those are retried) is done again one document at a time, so that
        only the document at fault is refused."""
        try:
            return (*await self._prepare_all(docs, chunking), {})
        except _Refused:
            pass
        documents, parts, truncated, refused = [], [], set(), {}
        for d in docs:
            try:
                prepared, vectors, cut = await self._prepare_all([d], chunking)
            except _Refused as exc:
                refused[d.id] = str(exc)
                continue
            documents += prepared
            parts.append(vectors)
            truncated |= cut
        dimension = await self.embedder.dimension()
        vectors = np.concatenate(parts) if parts else np.zeros((0, dimension), dtype=np.float32)
        return documents, vectors, truncated, refused

    async def _prepare_all(
        self, docs: list[StoredDocument], chunking: ChunkingParams | None
    ) -> tuple[list[StoredDocument], np.ndarray, set[str]]:
        try:
            prepared = await asyncio.to_thread(self.chunker.prepare, docs, chunking)
            vectors = await self._embed_texts(prepared.texts)
        except (QueueUnavailable, StoreUnavailable, EmbedderError):
            raise
        except Exception as exc:
            log.warning("documents could not be prepared or embedded: %r", exc)
            raise _Refused(f"could not be embedded: {type(exc).__name__}: {str(exc)[:200]}") from exc
        return prepared.documents, vectors, prepared.truncated

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
            with batch.trace.stage("write") as span:
                written, failed = await self._write_batch(batch)
                span.set_attributes({"thinksearch.ingest.written": written, "thinksearch.ingest.failed": failed})
            batch.trace.end({"thinksearch.ingest.written": written, "thinksearch.ingest.failed": failed})

    async def _write_batch(self, batch: _Embedded) -> tuple[int, int]:
        """Writes a batch, writes off what the store refused, acknowledges; (entries written, lines failed)."""
        entries = await self._retrying(self._live, batch.entries)  # a cancel during embedding: write nothing
        live = {e.entry_id for e in entries}
        refused = dict(batch.refused)
        started = time.perf_counter()
        for collection, docs in batch.documents.items():
            if not any(e.collection == collection for e in entries):
                continue
            try:
                refused.update(await self._write_collection(collection, docs, batch.vectors[collection]))
            except (CollectionNotFound, VectorMismatch) as exc:
                # Nothing a retry can fix: the job fails, its remaining entries are dropped.
                reason = "collection was deleted" if isinstance(exc, CollectionNotFound) else str(exc)
                failed = [e for e in entries if e.collection == collection]
                for job_id in {e.job_id for e in failed}:
                    await self._retrying(self.broker.fail, job_id, f"write failed: {reason}")
                await self._retrying(self.broker.drop, failed)
                live -= {e.entry_id for e in failed}
        metrics.INGEST_STAGE_SECONDS.labels("write").observe(time.perf_counter() - started)
        failures = [
            LineFailure(e, batch.ids[e.entry_id], refused[(e.collection, batch.ids[e.entry_id])])
            for e in entries
            if e.entry_id in live and (e.collection, batch.ids[e.entry_id]) in refused
        ]
        if failures:
            await self._fail_lines(failures)
        failed_ids = {f.entry.entry_id for f in failures}
        written = [e for e in entries if e.entry_id in live and e.entry_id not in failed_ids]
        await self._retrying(self.broker.complete, written, batch.truncated)
        metrics.INGEST_DOCUMENTS.labels("ingested").inc(len(written))
        return len(written), len(failures)

    async def _write_collection(self, collection: str, docs: list[StoredDocument], vectors: np.ndarray) -> dict:
        """Writes one collection's part of a batch; returns {(collection, id): why} for documents the store refused.
        A refused batch is written again one document (with its chunks) at a time, to find the ones at fault."""
        try:
            await self._store_write(collection, docs, vectors)
            return {}
        except StoreRejected as exc:
            log.warning("the store refused a batch of %s (%s): writing its documents one by one", collection, exc)
        rows: dict[str, list[int]] = defaultdict(list)
        for i, d in enumerate(docs):
            rows[d.id].append(i)
        refused = {}
        for doc_id, indexes in rows.items():
            try:
                await self._store_write(collection, [docs[i] for i in indexes], vectors[indexes])
            except StoreRejected as exc:
                refused[(collection, doc_id)] = str(exc)
        return refused

    async def _store_write(self, collection: str, docs: list[StoredDocument], vectors: np.ndarray) -> None:
        self._write_in_flight = asyncio.ensure_future(self._retrying(self.store.write_batch, collection, docs, vectors))
        await asyncio.shield(self._write_in_flight)

    async def _fail_lines(self, failures: list[LineFailure]) -> None:
        await self._retrying(self.broker.fail_lines, failures)
        metrics.INGEST_DOCUMENTS.labels("failed").inc(len(failures))
        for f in failures[:5]:
            log.warning("job %s line %d (id %s) failed: %s", f.entry.job_id, f.entry.line, f.document_id, f.reason)

    async def _retrying(self, fn, *args, **kwargs):
        """Transient failures (queue, store or embedder down) pause the batch and retry it; nothing is lost."""
        while True:
            try:
                return await fn(*args, **kwargs)
            except (QueueUnavailable, StoreUnavailable, EmbedderError) as exc:
                log.warning("ingest batch waits on a dependency: %s", exc)
                await asyncio.sleep(RETRY_S)
