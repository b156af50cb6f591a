"""Client of an OpenAI-compatible `/v1/embeddings` server (vLLM pooling runner, TEI, ...).

It returns float32 arrays of shape (len(texts), dimension).
"""

from __future__ import annotations

import asyncio

import numpy as np

from service.clients.breakers import Breakers
from service.clients.http import Failure, OpenAICompatibleClient
from service.model.errors import EmbedderError


class RemoteEmbedder(OpenAICompatibleClient):
    breaker = "embedder"
    label = "the embedding server"
    # Embedding is short and idempotent: one more try, jittered, for a refused or dropped connection.
    connect_attempts = 2

    def __init__(
        self,
        base_url: str,
        *,
        model: str | None,
        api_key: str | None,
        timeout_s: float,
        batch_size: int,
        breakers: Breakers | None = None,
    ) -> None:
        super().__init__(
            base_url, model=model, api_key=api_key, timeout_s=timeout_s, max_connections=32, breakers=breakers
        )
        self.name = model or "unresolved"
        self._batch_size = batch_size
        self._dimension: int | None = None

    def _error(self, failure: Failure) -> EmbedderError:
        if failure.kind in ("timeout", "connect"):
            return EmbedderError(f"embedding server unreachable: {failure.detail}")
        if failure.kind == "http":
            return EmbedderError(f"embedding server answered {failure.status}: {failure.detail}", failure.status)
        return EmbedderError(failure.detail)  # protocol, circuit_open: the detail says it

    async def model(self) -> str:
        self.name = await super().model()
        return self.name

    async def dimension(self) -> int:
        if self._dimension is None:
            self._dimension = int((await self.embed(["dimension probe"])).shape[1])
        return self._dimension

    async def embed(self, texts: list[str], *, documents: bool = False) -> np.ndarray:
        model = await self.model()
        chunks = [texts[i : i + self._batch_size] for i in range(0, len(texts), self._batch_size)]
        parts = await asyncio.gather(*(self._embed_chunk(model, c) for c in chunks))
        return np.concatenate(parts) if parts else np.zeros((0, self._dimension or 0), dtype=np.float32)

    async def _embed_chunk(self, model: str, texts: list[str]) -> np.ndarray:
        data = await self._call("POST", "embeddings", json={"model": model, "input": texts})
        rows = sorted(data.get("data", []), key=lambda d: d["index"])
        if len(rows) != len(texts):
            raise EmbedderError(f"asked for {len(texts)} embeddings, got {len(rows)}")
        return np.asarray([r["embedding"] for r in rows], dtype=np.float32)
