"""Embedders: in-process MiniLM on ONNX Runtime (onnx_embedder, the default) or on torch with sentence-transformers
(local_embedder), or an OpenAI-compatible `/v1/embeddings` server (remote_embedder). All return float32 arrays of
shape (len(texts), dimension). Nothing here imports torch: the torch backend loads it when it is built.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from service.clients.breakers import Breakers
from service.clients.local_embedder import LocalEmbedder
from service.clients.onnx_embedder import OnnxEmbedder
from service.clients.remote_embedder import RemoteEmbedder

__all__ = ["Embedder", "make_embedder"]


class Embedder(Protocol):
    name: str

    async def dimension(self) -> int: ...

    async def embed(self, texts: list[str], *, documents: bool = False) -> np.ndarray: ...

    async def ping(self) -> None: ...

    async def aclose(self) -> None: ...


def make_embedder(
    url: str | None,
    *,
    model: str | None,
    api_key: str | None,
    timeout_s: float,
    batch_size: int,
    breakers: Breakers | None = None,
    threads: int = 0,
    backend: str = "onnx",
    query_threads: int = 1,
    onnx_dir: str | None = None,
) -> Embedder:
    if url:
        return RemoteEmbedder(
            url, model=model, api_key=api_key, timeout_s=timeout_s, batch_size=batch_size, breakers=breakers
        )
    if backend == "torch":
        return LocalEmbedder(model, batch_size, threads, query_threads)
    return OnnxEmbedder(model, batch_size, threads, query_threads, model_dir=onnx_dir)
