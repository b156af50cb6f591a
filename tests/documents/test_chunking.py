"""Long documents: chunked collections (parent ids, one hit per document scored by its best chunk, replacement and
deletion without stale chunks) on every store backend, and truncation counted without chunking."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from service.clients.onnx_embedder import OnnxEmbedder
from service.documents.chunking import ApproximateTokens, Chunker, TokenizerTokens
from service.model.collections import ChunkingParams
from service.model.documents import StoredDocument
from service.model.profiles import make_profile
from service.settings import Settings
from tests.ingest.support import NDJSON, ndjson, scifact, wait_job
from tests.support.gateway import Gateway
from tests.support.qdrant_standin import QdrantStandin

TAIL = (
    "Emperor penguins in Antarctica huddle together in large colonies through the polar winter, taking turns at "
    "the windy edge of the huddle to survive the extreme cold."
)
QUERY = "how do penguins survive the antarctic winter cold by huddling"
CHUNKING = {"max_tokens": 128, "overlap": 16}


def long_document() -> dict:
    """SciFact abstracts (about 900 word pieces) with a passage on another topic at the very end."""
    filler = " ".join(d["text"] for d in scifact(3))
    return {"id": "long", "title": "Collected notes", "text": f"{filler} {TAIL}"}


@pytest.fixture(scope="module", params=["edge", "local", "server"])
def gateway(request, tmp_path_factory) -> Iterator[Gateway]:
    if request.param == "server":
        with QdrantStandin() as qdrant, Gateway(Settings(qdrant_url=qdrant.url)) as gw:
            yield gw
        return
    path = ":memory:" if request.param == "local" else str(tmp_path_factory.mktemp("edge"))
    with Gateway(Settings(qdrant_path=path)) as gw:
        yield gw


def _chunker(gw: Gateway) -> Chunker:
    services = gw.app.state.services
    return services.catalog.chunker


def _search(
    gw: Gateway, collection: str, query: str = QUERY, top_k: int = 10, retrieval: str = "dense"
) -> list[dict]:
    """Dense by default: the scores compared here are cosine similarities (hybrid scores are fused ranks)."""
    body = {"query": query, "top_k": top_k, "think": False, "retrieval": retrieval}
    r = gw.client.post(f"/v1/collections/{collection}/search", json=body)
    assert r.status_code == 200, r.text
    return r.json()["results"]


def _reference_score(gw: Gateway, texts: list[str]) -> float:
    """The best score of the query against these exact texts, each its own point in an unchunked collection."""
    c = gw.client
    c.delete("/v1/collections/pieces")
    assert c.post("/v1/collections", json={"name": "pieces"}).status_code == 201
    docs = [{"id": f"p{i}", "text": t} for i, t in enumerate(texts)]
    assert c.post("/v1/collections/pieces/documents", json={"documents": docs}).status_code == 200
    return _search(gw, "pieces", top_k=1)[0]["score"]


def test_long_document_is_chunked_searched_once_replaced_and_deleted(gateway: Gateway):
    c = gateway.client
    r = c.post("/v1/collections", json={"name": "chunked", "chunking": CHUNKING})
    assert r.status_code == 201, r.text
    assert c.get("/v1/collections/chunked").json()["chunking"] == CHUNKING
    long = long_document()
    others = scifact(3, offset=10, text_chars=600)
    r = c.post("/v1/collections/chunked/documents", json={"documents": [long, *others]})
    assert r.json() == {"upserted": 4, "truncated": 0}
    assert c.get("/v1/collections/chunked").json()["count"] == 4  # documents, not chunks

    chunks = _chunker(gateway).split(StoredDocument("long", long["text"], long["title"], {}), ChunkingParams(128, 16))
    assert len(chunks) >= 5
    got = c.get("/v1/collections/chunked/documents/long").json()
    assert got["text"] == long["text"] and got["title"] == long["title"]  # the whole document

    # The passage past the first window is found; each document once; the score is its best chunk's.
    results = _search(gateway, "chunked")
    assert [h["id"] for h in results][0] == "long"
    assert sorted(h["id"] for h in results) == sorted(["long", *(d["id"] for d in others)])
    assert results[0]["text"] == long["text"]
    assert results[0]["score"] == pytest.approx(_reference_score(gateway, chunks), abs=2e-4)
    assert "penguins" in chunks[-1].lower() and "penguins" not in chunks[0].lower()
    # BM25 and the fused search group by document too: each once, its whole text.
    # (BM25 finds only documents sharing a term with the query; the dense side of hybrid finds all four.)
    for retrieval, found in (("sparse", None), ("hybrid", 4)):
        fused = _search(gateway, "chunked", retrieval=retrieval)
        assert len({h["id"] for h in fused}) == len(fused) == (found or len(fused)), retrieval
        assert next(h for h in fused if h["id"] == "long")["text"] == long["text"]
    assert _search(gateway, "chunked", query="penguins", retrieval="sparse", top_k=1)[0]["id"] == "long"

    # Re-sent shorter: its old chunks are gone (a stale tail chunk would keep the high score).
    short = {"id": "long", "title": "Collected notes", "text": "Only a short note about protein folding now."}
    assert c.post("/v1/collections/chunked/documents", json={"documents": [short]}).json()["upserted"] == 1
    assert c.get("/v1/collections/chunked").json()["count"] == 4
    rescored = {h["id"]: h for h in _search(gateway, "chunked")}
    assert rescored["long"]["text"] == short["text"]
    assert rescored["long"]["score"] == pytest.approx(
        _reference_score(gateway, [f"{short['title']} {short['text']}"]), abs=2e-4
    )

    # Long again, then deleted: no chunk of it is left to be found.
    c.post("/v1/collections/chunked/documents", json={"documents": [long]})
    assert c.delete("/v1/collections/chunked/documents/long").status_code == 204
    assert c.get("/v1/collections/chunked/documents/long").status_code == 404
    assert c.get("/v1/collections/chunked").json()["count"] == 3
    assert "long" not in {h["id"] for h in _search(gateway, "chunked")}


def test_bulk_path_chunks_and_counts_truncation_without_chunking(gateway: Gateway):
    c = gateway.client
    long = long_document()
    others = scifact(4, offset=20, text_chars=400)
    c.post("/v1/collections", json={"name": "bulk-chunked", "chunking": CHUNKING})
    c.post("/v1/collections", json={"name": "bulk-plain"})
    truncated_before = _truncated_metric(c)
    jobs = {}
    for name in ("bulk-chunked", "bulk-plain"):
        r = c.post(f"/v1/collections/{name}/documents/bulk", content=ndjson([long, *others]), headers=NDJSON)
        assert r.status_code == 202, r.text
        jobs[name] = wait_job(c, r.json()["job_id"], timeout=300)
        assert jobs[name]["status"] == "succeeded" and jobs[name]["processed"] == 5
        assert c.get(f"/v1/collections/{name}").json()["count"] == 5
    assert jobs["bulk-chunked"]["truncated"] == 0
    assert jobs["bulk-plain"]["truncated"] == 1  # only the long document exceeds the window
    chunked = _search(gateway, "bulk-chunked")
    assert chunked[0]["id"] == "long" and len({h["id"] for h in chunked}) == len(chunked) == 5
    # Unchunked, the passage past the window was never embedded: the long document loses its lead.
    assert _search(gateway, "bulk-plain")[0]["score"] < chunked[0]["score"] - 0.05
    # The synchronous upsert reports truncation as well.
    r = c.post("/v1/collections/bulk-plain/documents", json={"documents": [long, others[0]]})
    assert r.json() == {"upserted": 2, "truncated": 1}
    assert _truncated_metric(c) == truncated_before + 1


def _truncated_metric(c) -> float:
    """The bulk path's truncation counter (process-wide: the gateways of this module share it)."""
    for line in c.get("/metrics").text.splitlines():
        if line.startswith('thinksearch_documents_truncated_total{path="bulk"}'):
            return float(line.split()[-1])
    return 0.0


def test_chunking_option_is_validated(gateway: Gateway):
    c = gateway.client
    for bad in ({"max_tokens": 8}, {"max_tokens": 64, "overlap": 40}, {"max_tokens": 64, "overlpa": 4}):
        r = c.post("/v1/collections", json={"name": "bad-chunking", "chunking": bad})
        assert r.status_code == 422, (bad, r.text)
        assert r.headers["content-type"] == "application/problem+json"


# --- the splitter, with the model's own tokenizer ---


@pytest.fixture(scope="module")
def embedder() -> OnnxEmbedder:
    return OnnxEmbedder(None, 16)  # the default backend (tests/clients: torch counts the same tokens)


def test_chunks_fit_the_window_overlap_and_cover_the_text(embedder: OnnxEmbedder):
    tokens = TokenizerTokens(embedder.tokenizer, embedder.max_tokens - 2)
    assert tokens.window == 254
    profile = make_profile(Settings())
    chunker = Chunker(tokens, profile)
    long = long_document()
    doc = StoredDocument("long", long["text"], long["title"], {})
    chunks = chunker.split(doc, ChunkingParams(max_tokens=100, overlap=20))
    counts = [len(s) for s in tokens.offsets(chunks)]
    assert len(chunks) > 5 and max(counts) <= 100 and min(counts) > 20
    assert all(ch.startswith("Collected notes ") for ch in chunks)
    bodies = [ch.removeprefix("Collected notes ") for ch in chunks]
    assert bodies[0] == doc.text[: len(bodies[0])] and doc.text.endswith(bodies[-1])
    for a, b in zip(bodies, bodies[1:], strict=False):  # consecutive chunks share their overlap
        assert b[:30] in a
    # A max above the window is held to it; a short document stays one chunk (still a chunk: index 0).
    assert max(len(s) for s in tokens.offsets(chunker.split(doc, ChunkingParams(4096, 0)))) <= 254
    prepared = chunker.prepare([StoredDocument("s", "short text", "", {}), doc], ChunkingParams(100, 20))
    assert [d.chunk for d in prepared.documents][:2] == [0, 0] and prepared.documents[0].id == "s"
    assert {d.id for d in prepared.documents} == {"s", "long"} and not prepared.truncated
    # No chunking: only what exceeds the window is reported truncated.
    assert chunker.prepare([StoredDocument("s", "short text", "", {}), doc], None).truncated == {"long"}


def test_approximate_tokens_count_at_least_the_model_tokens_on_english_text(embedder: OnnxEmbedder):
    text = long_document()["text"]
    exact = len(TokenizerTokens(embedder.tokenizer, 254).offsets([text])[0])
    approx = len(ApproximateTokens(254).offsets([text])[0])
    assert 0.8 * exact <= approx <= 1.5 * exact, (exact, approx)
