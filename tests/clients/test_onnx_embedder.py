"""The ONNX Runtime backend (the default): torch's vectors, torch's tokens, and no torch in the serving process."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from service.clients.local_embedder import LocalEmbedder
from service.clients.onnx_embedder import CONFIG_FILE, OnnxEmbedder, OnnxModelMissing
from service.documents.chunking import SPECIAL_TOKENS, TokenizerTokens, make_tokens
from tests.support.servers import REPO_ROOT

SCIFACT = Path("/work/shared/data/beir/scifact")
MIN_COSINE = 0.9999


def _scifact_texts(documents: int, queries: int) -> list[str]:
    if not SCIFACT.is_dir():
        pytest.skip(f"no SciFact at {SCIFACT}")
    with (SCIFACT / "corpus.jsonl").open() as f:
        docs = [json.loads(line) for line in itertools.islice(f, documents)]
    with (SCIFACT / "queries.jsonl").open() as f:
        qs = [json.loads(line)["text"] for line in itertools.islice(f, queries)]
    return [f"{d['title']}\n{d['text']}" for d in docs] + qs


@pytest.fixture(scope="module")
def backends():
    onnx, torch = OnnxEmbedder(None, batch_size=16), LocalEmbedder(None, batch_size=16)
    yield onnx, torch
    for e in (onnx, torch):
        asyncio.run(e.aclose())


def test_onnx_and_torch_vectors_agree_on_scifact(backends):
    """250 abstracts (many past the 256-token window, so truncation must match) and 50 queries, on both lanes."""
    onnx, torch = backends
    texts = _scifact_texts(250, 50)
    tokens = make_tokens(torch, 256)
    past_window = sum(len(spans) > tokens.window for spans in tokens.offsets(texts))
    assert past_window >= 50, past_window

    async def run(e):
        return await e.embed(texts[:250], documents=True), await e.embed(texts[250:])

    got = np.concatenate(asyncio.run(run(onnx)))
    want = np.concatenate(asyncio.run(run(torch)))
    assert got.shape == want.shape == (300, 384) and got.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, rtol=1e-5)
    cosine = (got * want).sum(axis=1)
    assert cosine.min() >= MIN_COSINE, (cosine.min(), int(cosine.argmin()))


def test_chunking_counts_the_same_tokens_on_both_backends(backends):
    onnx, torch = backends
    assert onnx.max_tokens == torch.max_tokens == 256
    a, b = make_tokens(onnx, 999), make_tokens(torch, 999)
    assert isinstance(a, TokenizerTokens) and a.window == b.window == 256 - SPECIAL_TOKENS
    texts = _scifact_texts(20, 5) + ["naïve café, 3.5µm — über-long " * 100]
    assert a.offsets(texts) == b.offsets(texts)


def test_a_missing_or_foreign_export_fails_at_startup_with_a_hint(tmp_path: Path, onnx_model: Path):
    with pytest.raises(OnnxModelMissing, match="export-onnx"):
        OnnxEmbedder(None, 16, model_dir=tmp_path / "nothing")
    copy = tmp_path / "copy"
    shutil.copytree(onnx_model, copy)
    config = json.loads((copy / CONFIG_FILE).read_text())
    (copy / CONFIG_FILE).write_text(json.dumps({**config, "name": "someone/else"}))
    with pytest.raises(OnnxModelMissing, match="someone/else"):
        OnnxEmbedder(None, 16, model_dir=copy)


SERVE_WITHOUT_TORCH = textwrap.dedent(
    """
    import asyncio, json, sys
    import httpx
    from asgi_lifespan import LifespanManager
    from service.app import create_app
    from service.settings import Settings

    async def main():
        app = create_app(Settings(_env_file=None, qdrant_path=":memory:"))
        async with LifespanManager(app) as manager:
            transport = httpx.ASGITransport(app=manager.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                assert (await client.post("/v1/collections", json={"name": "c"})).status_code == 201
                docs = [{"id": "a", "text": "Mitochondria produce the cell's energy."},
                        {"id": "b", "text": "The Eiffel Tower stands in Paris."}]
                r = await client.post("/v1/collections/c/documents", json={"documents": docs})
                assert r.status_code == 200, r.text
                r = await client.post("/v1/collections/c/search", json={"query": "powerhouse of the cell"})
                assert r.status_code == 200, r.text
                top = r.json()["results"][0]["id"]
            backend = type(app.state.services.embedder).__name__
        heavy = sorted({m.split(".")[0] for m in sys.modules} & {"torch", "sentence_transformers", "transformers"})
        print(json.dumps({"top": top, "backend": backend, "heavy": heavy}))

    asyncio.run(main())
    """
)


def test_serving_on_the_onnx_default_imports_no_torch():
    """The whole app (lifespan, ingest, search) in a fresh interpreter: neither torch nor sentence-transformers
    (nor transformers) is ever imported."""
    unset = {"EMBEDDER_URL", "EMBEDDER_BACKEND", "QDRANT_URL", "REDIS_URL", "THINKER_URL", "API_KEYS"}
    env = {k: v for k, v in os.environ.items() if k not in unset}
    proc = subprocess.run(
        [sys.executable, "-c", SERVE_WITHOUT_TORCH], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out == {"top": "a", "backend": "OnnxEmbedder", "heavy": []}
