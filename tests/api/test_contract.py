"""The REST contract of docs/api.md in direct mode: real MiniLM embedder, embedded Qdrant, real HTTP."""

from __future__ import annotations

import uuid

import pytest

from service.settings import Settings
from tests.support.gateway import Gateway

DOCS = [
    {
        "id": "cats",
        "title": "Pets",
        "text": "Cats are small domesticated felines kept as pets.",
        "metadata": {"lang": "en", "year": 2020, "tags": ["animals", "pets"]},
    },
    {
        "id": "market",
        "text": "The stock market fell sharply after the interest rate decision.",
        "metadata": {"lang": "en", "year": 2021},
    },
    {
        "id": "a/b c",
        "text": "Photosynthesis converts light energy into chemical energy in plants.",
        "metadata": {"lang": "de", "year": 2020},
    },
]


@pytest.fixture(scope="module", params=["edge", "local"])
def settings(request, tmp_path_factory):
    """Settings on each embedded backend: the whole suite runs on Qdrant Edge (a fresh folder per gateway) and on
    qdrant-client's local mode (in memory)."""

    def make(**overrides) -> Settings:
        path = str(tmp_path_factory.mktemp("edge-store")) if request.param == "edge" else ":memory:"
        return Settings(_env_file=None, qdrant_embedded=request.param, qdrant_path=path, **overrides)

    return make


@pytest.fixture(scope="module")
def gw(settings):
    with Gateway(settings(max_body_bytes=256 * 1024)) as gateway:
        yield gateway


@pytest.fixture
def collection(gw):
    name = f"c_{uuid.uuid4().hex[:8]}"
    assert gw.client.post("/v1/collections", json={"name": name}).status_code == 201
    r = gw.client.post(f"/v1/collections/{name}/documents", json={"documents": DOCS})
    assert r.json() == {"upserted": 3, "truncated": 0}
    yield name
    gw.client.delete(f"/v1/collections/{name}")


def snapshot(gw, name):
    """Everything stored in a collection, to show a rejected request changed nothing."""
    count = gw.client.get(f"/v1/collections/{name}").json()["count"]
    docs = {d["id"]: gw.client.get(f"/v1/collections/{name}/documents/{d['id']}").json() for d in DOCS}
    return count, docs


def assert_problem(response, status):
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["status"] == status and body["title"] and body["detail"]
    assert "Traceback" not in response.text
    return body


def test_health_and_readiness(gw):
    assert gw.client.get("/healthz").json() == {"status": "ok"}
    ready = gw.client.get("/readyz").json()
    assert ready["status"] == "ready"
    assert ready["dependencies"]["vector_store"]["ok"] and ready["dependencies"]["embedder"]["ok"]
    assert "thinker" not in ready["dependencies"]


def test_collection_lifecycle(gw):
    r = gw.client.post("/v1/collections", json={"name": "life-cycle_1"})
    assert r.status_code == 201
    assert r.json() == {
        "name": "life-cycle_1",
        "dimension": 384,
        "distance": "cosine",
        "embedder": "sentence-transformers/all-MiniLM-L6-v2",
        "sparse": True,  # a BM25 side by default
        "chunking": None,  # off unless asked for
    }
    assert_problem(gw.client.post("/v1/collections", json={"name": "life-cycle_1"}), 409)
    listed = gw.client.get("/v1/collections").json()["collections"]
    assert {"name": "life-cycle_1", "count": 0} in listed
    detail = gw.client.get("/v1/collections/life-cycle_1").json()
    assert detail["count"] == 0 and detail["dimension"] == 384 and detail["sparse"] is True
    assert gw.client.delete("/v1/collections/life-cycle_1").status_code == 204
    assert_problem(gw.client.get("/v1/collections/life-cycle_1"), 404)
    assert_problem(gw.client.delete("/v1/collections/life-cycle_1"), 404)


@pytest.mark.parametrize("name", ["", "has space", "x" * 65, "dots.no", "ünï"])
def test_invalid_collection_names(gw, name):
    assert_problem(gw.client.post("/v1/collections", json={"name": name}), 422)


def test_search_ranks_the_relevant_document_first(gw, collection):
    r = gw.client.post(f"/v1/collections/{collection}/search", json={"query": "kittens and house pets"})
    assert r.status_code == 200
    body = r.json()
    assert body["mode"] == "direct" and body["degraded"] is False
    assert body["thought_cache"] is None and body["thoughts"] is None
    assert set(body["timings_ms"]) >= {"cache", "think", "embed", "search", "total"}
    top = body["results"][0]
    assert top["id"] == "cats" and top["title"] == "Pets" and top["metadata"]["tags"] == ["animals", "pets"]
    assert [h["score"] for h in body["results"]] == sorted((h["score"] for h in body["results"]), reverse=True)
    second = body["results"][1]
    assert "title" in second and "metadata" in second  # every field, always


def test_search_filters(gw, collection):
    def ids(flt):
        r = gw.client.post(f"/v1/collections/{collection}/search", json={"query": "energy", "filter": flt})
        assert r.status_code == 200, r.text
        return {h["id"] for h in r.json()["results"]}

    assert ids({"lang": "de"}) == {"a/b c"}
    assert ids({"year": 2020}) == {"cats", "a/b c"}
    assert ids({"lang": ["de", "fr"]}) == {"a/b c"}
    assert ids({"tags": "pets"}) == {"cats"}
    assert ids({"lang": "xx"}) == set()


def test_top_k(gw, collection):
    r = gw.client.post(f"/v1/collections/{collection}/search", json={"query": "plants", "top_k": 1})
    assert len(r.json()["results"]) == 1


def test_upsert_same_id_replaces_and_delete_removes(gw, collection):
    doc = {"id": "cats", "text": "Dogs are loyal companions.", "metadata": {"lang": "en"}}
    assert gw.client.post(f"/v1/collections/{collection}/documents", json={"documents": [doc]}).json() == {
        "upserted": 1,
        "truncated": 0,
    }
    got = gw.client.get(f"/v1/collections/{collection}/documents/cats").json()
    assert got == {"id": "cats", "text": "Dogs are loyal companions.", "title": "", "metadata": {"lang": "en"}}
    assert gw.client.get(f"/v1/collections/{collection}").json()["count"] == 3
    hits = gw.client.post(f"/v1/collections/{collection}/search", json={"query": "loyal dogs"}).json()["results"]
    assert hits[0]["id"] == "cats" and hits[0]["text"] == "Dogs are loyal companions."

    # Ids with "/" and spaces, percent-encoded in the path.
    assert gw.client.get(f"/v1/collections/{collection}/documents/a%2Fb%20c").json()["id"] == "a/b c"
    assert gw.client.delete(f"/v1/collections/{collection}/documents/a%2Fb%20c").status_code == 204
    assert_problem(gw.client.get(f"/v1/collections/{collection}/documents/a%2Fb%20c"), 404)
    assert_problem(gw.client.delete(f"/v1/collections/{collection}/documents/a%2Fb%20c"), 404)
    assert gw.client.get(f"/v1/collections/{collection}").json()["count"] == 2
    hits = gw.client.post(f"/v1/collections/{collection}/search", json={"query": "photosynthesis"}).json()
    assert "a/b c" not in {h["id"] for h in hits["results"]}


def test_duplicate_ids_in_one_request_last_wins(gw, collection):
    docs = [{"id": "dup", "text": "first version"}, {"id": "dup", "text": "second version"}]
    r = gw.client.post(f"/v1/collections/{collection}/documents", json={"documents": docs})
    assert r.json() == {"upserted": 1, "truncated": 0}
    assert gw.client.get(f"/v1/collections/{collection}/documents/dup").json()["text"] == "second version"
    assert gw.client.get(f"/v1/collections/{collection}").json()["count"] == 4


BAD_DOCUMENT_BATCHES = [
    ([{"id": "ok", "text": "fine"}, {"id": "", "text": "empty id"}], "documents[1].id"),
    ([{"id": "ok", "text": "fine"}, {"id": "x", "text": "   "}], "documents[1].text"),
    ([{"id": "x" * 513, "text": "long id"}], "documents[0].id"),
    (
        [{"id": "ok", "text": "fine"}, {"id": "y", "text": "t", "metadata": {"nested": {"a": 1}}}],
        "documents[1].metadata",
    ),
    ([{"id": "y", "text": "t", "metadata": {"big": "x" * 17000}}], "documents[0].metadata"),
    ([{"id": "y", "text": "x" * 100_001}], "documents[0].text"),
    ([{"id": "y", "text": "t", "colour": "red"}], "documents[0].colour"),
    ([{"id": 5, "text": "t"}], "documents[0].id"),
    ([], "documents"),
]


@pytest.mark.parametrize(("documents", "field"), BAD_DOCUMENT_BATCHES)
def test_invalid_documents_are_422_naming_the_field_and_nothing_changes(gw, collection, documents, field):
    before = snapshot(gw, collection)
    body = assert_problem(gw.client.post(f"/v1/collections/{collection}/documents", json={"documents": documents}), 422)
    assert field in body["detail"] and field in {e["field"] for e in body["errors"]}
    assert snapshot(gw, collection) == before


def test_too_many_documents(gw, collection):
    docs = [{"id": str(i), "text": "t"} for i in range(1001)]
    body = assert_problem(gw.client.post(f"/v1/collections/{collection}/documents", json={"documents": docs}), 422)
    assert "documents" in body["detail"]


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"query": ""}, "query"),
        ({"query": "   "}, "query"),
        ({"query": "x" * 8001}, "query"),
        ({"query": "q", "top_k": 0}, "top_k"),
        ({"query": "q", "top_k": 101}, "top_k"),
        ({"query": "q", "topk": 5}, "topk"),
        ({"query": "q", "filter": {"lang": []}}, "filter"),
        ({"query": "q", "filter": {"lang": {"$ne": 1}}}, "filter"),
        ({"query": "q", "deadline_ms": 0}, "deadline_ms"),
        ({"query": "q", "think": "maybe"}, "think"),
        ({}, "query"),
    ],
)
def test_invalid_searches_are_422(gw, collection, payload, field):
    body = assert_problem(gw.client.post(f"/v1/collections/{collection}/search", json=payload), 422)
    assert field in body["detail"]


def test_unknown_collection_is_404_everywhere(gw):
    assert_problem(gw.client.post("/v1/collections/nope/search", json={"query": "q"}), 404)
    assert_problem(
        gw.client.post("/v1/collections/nope/documents", json={"documents": [{"id": "a", "text": "b"}]}), 404
    )
    assert_problem(gw.client.get("/v1/collections/nope/documents/a"), 404)
    assert_problem(gw.client.delete("/v1/collections/nope/documents/a"), 404)
    assert_problem(gw.client.get("/v1/collections/bad%20name"), 404)
    assert gw.client.get("/v1/collections/nope").status_code == 404


def test_malformed_and_wrong_content_type(gw, collection):
    url = f"/v1/collections/{collection}/search"
    assert_problem(gw.client.post(url, content=b"{not json", headers={"content-type": "application/json"}), 400)
    assert_problem(gw.client.post(url, content=b"query=x", headers={"content-type": "text/plain"}), 415)
    assert_problem(gw.client.post(url, json=["a", "list"]), 422)


def test_body_too_large_is_413_and_nothing_changes(gw, collection):
    before = snapshot(gw, collection)
    docs = [{"id": f"big{i}", "text": "x" * 50_000} for i in range(8)]  # ~400 KB > the 256 KiB set here
    r = gw.client.post(f"/v1/collections/{collection}/documents", json={"documents": docs})
    assert_problem(r, 413)
    assert r.headers["x-request-id"]
    assert snapshot(gw, collection) == before


def test_request_id_is_echoed_or_made(gw):
    assert gw.client.get("/healthz", headers={"X-Request-ID": "abc-123"}).headers["x-request-id"] == "abc-123"
    made = gw.client.get("/healthz").headers["x-request-id"]
    assert len(made) >= 16
    assert gw.client.get("/v1/collections/nope").headers["x-request-id"]
    # A header that could smuggle junk into logs is replaced.
    assert gw.client.get("/healthz", headers={"X-Request-ID": "a b\tc"}).headers["x-request-id"] != "a b\tc"


def test_unknown_route_and_method_are_problems(gw):
    assert_problem(gw.client.get("/v2/nothing"), 404)
    assert_problem(gw.client.put("/v1/collections"), 405)


def test_metrics_exposed(gw, collection):
    gw.client.post(f"/v1/collections/{collection}/search", json={"query": "cats"})
    text = gw.client.get("/metrics").text
    assert 'thinksearch_request_duration_seconds_count{method="POST",route="/v1/collections/{name}/search"' in text
    assert 'thinksearch_search_stage_duration_seconds_count{stage="embed"}' in text
    assert "thinksearch_documents_upserted_total" in text
    assert f'thinksearch_collection_documents{{collection="{collection}"}}' in text


def test_openapi_docs(gw):
    assert gw.client.get("/docs").status_code == 200
    paths = gw.client.get("/openapi.json").json()["paths"]
    assert "/v1/collections/{name}/search" in paths


def test_api_keys_and_scopes(settings):
    keys = {"s-key": ["search"], "i-key": ["ingest"], "a-key": ["admin"]}
    with Gateway(settings(api_keys=keys)) as gw:
        c = gw.client

        def auth(key):
            return {"Authorization": f"Bearer {key}"}

        assert_problem(c.get("/v1/collections"), 401)
        assert_problem(c.get("/v1/collections", headers=auth("wrong")), 401)
        assert_problem(c.post("/v1/collections", json={"name": "k"}, headers=auth("s-key")), 403)
        assert c.post("/v1/collections", json={"name": "k"}, headers=auth("a-key")).status_code == 201
        docs = {"documents": [{"id": "1", "text": "hello"}]}
        assert_problem(c.post("/v1/collections/k/documents", json=docs, headers=auth("s-key")), 403)
        assert c.post("/v1/collections/k/documents", json=docs, headers=auth("i-key")).status_code == 200
        assert c.post("/v1/collections/k/search", json={"query": "hi"}, headers=auth("s-key")).status_code == 200
        assert c.get("/healthz").status_code == 200 and c.get("/metrics").status_code == 200


def test_think_without_a_thinker(gw, collection):
    explicit = gw.client.post(f"/v1/collections/{collection}/search", json={"query": "cats", "think": True}).json()
    assert explicit["mode"] == "direct" and explicit["degraded"] is True and explicit["results"]
    off = gw.client.post(f"/v1/collections/{collection}/search", json={"query": "cats", "think": False}).json()
    assert off["degraded"] is False


def test_omitted_think_without_a_thinker_is_plain_direct_even_if_think_default_is_set(settings):
    with Gateway(settings(think_default=True)) as gw:
        gw.client.post("/v1/collections", json={"name": "d"})
        gw.client.post("/v1/collections/d/documents", json={"documents": DOCS})
        body = gw.client.post("/v1/collections/d/search", json={"query": "cats"}).json()
    assert body["mode"] == "direct" and body["degraded"] is False


def test_an_unexpected_error_is_a_problem_with_the_request_id_and_no_trace(settings):
    gateway = Gateway(settings())

    async def boom() -> None:
        raise RuntimeError("secret internals")

    gateway.app.add_api_route("/boom", boom)  # a route that fails as a bug would
    with gateway as gw:
        r = gw.client.get("/boom", headers={"X-Request-ID": "req-500"})
    body = assert_problem(r, 500)
    assert r.headers["x-request-id"] == "req-500" and body["request_id"] == "req-500"
    assert "secret internals" not in r.text


def test_hnsw_parameters_at_create_and_hnsw_ef_per_search(gw):
    body = {"name": "tuned", "hnsw": {"m": 32, "ef_construct": 200}}
    assert gw.client.post("/v1/collections", json=body).status_code == 201
    gw.client.post("/v1/collections/tuned/documents", json={"documents": DOCS})
    r = gw.client.post("/v1/collections/tuned/search", json={"query": "kittens", "hnsw_ef": 256})
    assert r.status_code == 200 and r.json()["results"][0]["id"] == "cats"
    assert_problem(gw.client.post("/v1/collections", json={"name": "bad", "hnsw": {"m": 0}}), 422)
    assert_problem(gw.client.post("/v1/collections", json={"name": "bad", "hnsw": {"ef": 9}}), 422)
    assert_problem(gw.client.post("/v1/collections/tuned/search", json={"query": "x", "hnsw_ef": 0}), 422)
    gw.client.delete("/v1/collections/tuned")
