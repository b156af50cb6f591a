"""Embedders: in-process sentence-transformers (local_embedder), or an OpenAI-compatible `/v1/embeddings` server
(remote_embedder). Both return float32 arrays of shape (len(texts), dimension).
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from service.clients.breakers import Breakers
from service.clients.local_embedder import LocalEmbedder
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
) -> Embedder:
    if url:
        return RemoteEmbedder(
            url, model=model, api_key=api_key, timeout_s=timeout_s, batch_size=batch_size, breakers=breakers
        )
    return LocalEmbedder(model, batch_size, threads)
