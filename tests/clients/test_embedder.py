"""The in-process embedder (real MiniLM), on both backends (ONNX Runtime, torch): merged calls give the same
vectors, and queries overtake an ingest (the lanes of service/clients/embedding_lanes.py)."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from service.clients.embedding_lanes import WORK_CHUNK
from service.clients.local_embedder import LocalEmbedder
from service.clients.onnx_embedder import OnnxEmbedder


@pytest.fixture(scope="module", params=["onnx", "torch"])
def embedder(request):
    e = OnnxEmbedder(None, batch_size=16) if request.param == "onnx" else LocalEmbedder(None, batch_size=16)
    yield e
    asyncio.run(e.aclose())


def test_dimension_and_normalised_vectors(embedder):
    vectors = asyncio.run(embedder.embed(["hello world", "a second text"]))
    assert vectors.shape == (2, 384) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)


def test_concurrent_calls_are_merged_without_mixing_results(embedder):
    texts = [f"sentence number {i} about topic {i % 3}" for i in range(10)]

    async def run():
        alone = [await embedder.embed([t]) for t in texts]
        together = await asyncio.gather(*(embedder.embed([t]) for t in texts))
        return np.concatenate(alone), np.concatenate(together)

    alone, together = asyncio.run(run())
    np.testing.assert_allclose(together, alone, atol=1e-5)


def test_a_query_overtakes_a_large_ingest(embedder):
    documents = [f"document {i} " + "word " * 50 for i in range(WORK_CHUNK * 4)]
    finished: list[str] = []

    async def run():
        async def ingest():
            vectors = await embedder.embed(documents, documents=True)
            finished.append("ingest")
            return vectors

        async def query():
            await asyncio.sleep(0)  # queued after the ingest's chunks
            await embedder.embed(["a short query"])
            finished.append("query")

        vectors, _ = await asyncio.gather(ingest(), query())
        return vectors

    vectors = asyncio.run(run())
    assert finished == ["query", "ingest"]
    assert vectors.shape == (len(documents), 384)


def test_a_query_does_not_wait_for_a_document_encode_in_progress(embedder):
    """Queries have a model thread of their own: one arriving during a document encode is answered before it
    ends (one thread for both made it wait for the whole encode), with the same vector as the document lane."""
    documents = [f"document {i} " + "word " * 200 for i in range(WORK_CHUNK)]  # one encode call
    finished: list[str] = []

    async def run():
        async def ingest():
            await embedder.embed(documents, documents=True)
            finished.append("ingest")

        async def query():
            await asyncio.sleep(0.3)  # the document encode has started
            vector = await embedder.embed(["a short query"])
            finished.append("query")
            return vector

        _, vector = await asyncio.gather(ingest(), query())
        return vector, await embedder.embed(["a short query"], documents=True)

    as_query, as_document = asyncio.run(run())
    assert finished == ["query", "ingest"]
    np.testing.assert_allclose(as_query, as_document, atol=1e-5)
