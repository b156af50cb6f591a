"""EMBEDDER_BACKEND=torch through the REST API (the whole rest of the suite runs on the onnx default): it serves
ingest, chunking and search, and scores as the onnx backend does on the same collection."""

from __future__ import annotations

import pytest

from service.clients.local_embedder import LocalEmbedder
from service.clients.onnx_embedder import OnnxEmbedder
from service.settings import Settings
from tests.support.gateway import Gateway

DOCS = [
    {"id": "cell", "title": "Biology", "text": "Mitochondria produce most of the cell's chemical energy."},
    {"id": "tower", "text": "The Eiffel Tower is a wrought-iron lattice tower in Paris."},
    {"id": "tides", "text": "Tides are caused by the Moon's gravity. " * 60},  # past the window: chunked
]
QUERY = {"query": "powerhouse of the cell", "top_k": 3, "retrieval": "dense"}


def _serve(backend: str) -> dict:
    settings = Settings(_env_file=None, qdrant_path=":memory:", embedder_backend=backend)
    with Gateway(settings) as gw:
        embedder = gw.app.state.services.embedder
        assert isinstance(embedder, LocalEmbedder if backend == "torch" else OnnxEmbedder)
        assert gw.client.get("/readyz").status_code == 200
        r = gw.client.post("/v1/collections", json={"name": "b", "chunking": {"max_tokens": 64, "overlap": 8}})
        assert r.status_code == 201, r.text
        assert r.json()["dimension"] == 384
        r = gw.client.post("/v1/collections/b/documents", json={"documents": DOCS})
        assert r.status_code == 200 and r.json()["upserted"] == 3, r.text
        r = gw.client.post("/v1/collections/b/search", json=QUERY)
        assert r.status_code == 200, r.text
        return {hit["id"]: hit["score"] for hit in r.json()["results"]}


@pytest.fixture(scope="module")
def scores() -> dict[str, dict]:
    return {backend: _serve(backend) for backend in ("torch", "onnx")}


def test_the_torch_backend_serves_ingest_and_search(scores):
    assert next(iter(scores["torch"])) == "cell"


def test_both_backends_score_alike_through_the_api(scores):
    assert scores["torch"].keys() == scores["onnx"].keys()
    for doc, score in scores["torch"].items():
        assert scores["onnx"][doc] == pytest.approx(score, abs=1e-4)
