"""The two lanes of an in-process embedder (queries, documents), whatever runs the model (torch or ONNX Runtime).

A lane has its own queue, batcher task and model thread. A query therefore never waits for a document encode:
with one thread for both, a search during a large ingest waited for a whole slice of documents, seconds on busy
cores (search p50 2.8 s vs 97 ms idle). Within a lane, requests that arrive while it is busy are merged into its
next encode call (at most WORK_CHUNK texts). Embeddings are float32 arrays of shape (len(texts), dimension).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from service.model.errors import EmbedderError

# Texts per unit of queued work (and the most one encode call merges).
WORK_CHUNK = 64

# encode(texts, documents) -> (len(texts), dimension) float32; runs on the lane's own thread.
Encode = Callable[[list[str], bool], np.ndarray]


@dataclass
class _Work:
    texts: list[str]
    future: asyncio.Future[np.ndarray]


class _Lane:
    def __init__(self, name: str, initializer: Callable[[], None] | None) -> None:
        self.name = name
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"embedder-{name}", initializer=initializer)
        self.queue: asyncio.Queue[_Work] | None = None
        self.worker: asyncio.Task[None] | None = None


class Lanes:
    """Queries (documents=False) and documents (documents=True), each batched onto its own model thread.

    `initializers` run once on each lane's thread (e.g. torch's per-thread intra-op thread count)."""

    def __init__(
        self,
        encode: Encode,
        dimension: int,
        *,
        query_initializer: Callable[[], None] | None = None,
        document_initializer: Callable[[], None] | None = None,
    ) -> None:
        self._encode = encode
        self._dimension = dimension
        self._lanes = {False: _Lane("queries", query_initializer), True: _Lane("documents", document_initializer)}

    async def embed(self, texts: list[str], *, documents: bool = False) -> np.ndarray:
        if not texts:
            return np.zeros((0, self._dimension), dtype=np.float32)
        loop = asyncio.get_running_loop()
        lane = self._lanes[documents]
        if lane.worker is None or lane.worker.get_loop() is not loop:
            # The batcher lives on the caller's event loop (one per app; tests and scripts may bring another).
            lane.queue = asyncio.Queue()
            lane.worker = loop.create_task(self._run(lane, documents), name=f"embedder-{lane.name}")
        assert lane.queue is not None
        futures = []
        for start in range(0, len(texts), WORK_CHUNK):
            future: asyncio.Future[np.ndarray] = loop.create_future()
            lane.queue.put_nowait(_Work(texts[start : start + WORK_CHUNK], future))
            futures.append(future)
        return np.concatenate(await asyncio.gather(*futures))

    async def _run(self, lane: _Lane, documents: bool) -> None:
        assert lane.queue is not None
        loop = asyncio.get_running_loop()
        while True:
            batch = [await lane.queue.get()]
            size = len(batch[0].texts)
            while not lane.queue.empty() and size < WORK_CHUNK:
                batch.append(lane.queue.get_nowait())
                size += len(batch[-1].texts)
            batch = [w for w in batch if not w.future.cancelled()]
            texts = [t for w in batch for t in w.texts]
            try:
                vectors = await loop.run_in_executor(lane.pool, self._encode, texts, documents) if texts else None
            except Exception as exc:  # a model failure fails these requests, not the worker
                for w in batch:
                    if not w.future.done():
                        w.future.set_exception(EmbedderError(repr(exc)))
                continue
            offset = 0
            for w in batch:
                if not w.future.done():
                    w.future.set_result(vectors[offset : offset + len(w.texts)])
                offset += len(w.texts)

    async def ping(self) -> None:
        for lane in self._lanes.values():
            if lane.worker is not None and lane.worker.done():
                raise EmbedderError(f"the embedding worker ({lane.name}) stopped")

    async def aclose(self) -> None:
        for lane in self._lanes.values():
            if lane.worker is not None:
                lane.worker.cancel()
            lane.pool.shutdown(wait=False, cancel_futures=True)
