"""Browse and delete by filter (issue 19, item 3): GET /v1/collections/{name}/documents pages through a collection
exactly once in a stable order, each document once even when chunked; POST …/documents/delete removes exactly the
matching documents and all their chunks. On Qdrant Edge, qdrant-client's local mode, and a Qdrant server (the
test stand-in, over real HTTP). Real MiniLM embedder."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import pytest

from service.settings import Settings
from tests.support.gateway import Gateway
from tests.support.qdrant_standin import QdrantStandin

WORDS = ["tide", "moon", "gravity", "ocean", "wave", "shore", "current", "salt", "storm", "reef"]


def documents(n: int, words: int) -> list[dict]:
    """n documents of `words` words each (long enough to be several chunks at max_tokens 32)."""
    return [
        {
            "id": f"doc/{i:03d}",
            "title": f"Doc {i}",
            "text": " ".join(WORDS[(i + j) % len(WORDS)] for j in range(words)) + f" number {i}.",
            "metadata": {"group": i % 3, "even": i % 2 == 0, "source": f"s{i % 4}"},
        }
        for i in range(n)
    ]


@pytest.fixture(scope="module", params=["edge", "local", "server"])
def gw(request, tmp_path_factory) -> Iterator[Gateway]:
    if request.param == "server":
        with QdrantStandin() as qdrant, Gateway(Settings(_env_file=None, qdrant_url=qdrant.url)) as gateway:
            yield gateway
        return
    path = str(tmp_path_factory.mktemp("edge")) if request.param == "edge" else ":memory:"
    with Gateway(Settings(_env_file=None, qdrant_embedded=request.param, qdrant_path=path)) as gateway:
        yield gateway


def make_collection(gw: Gateway, docs: list[dict], **config) -> str:
    name = f"b_{uuid.uuid4().hex[:8]}"
    assert gw.client.post("/v1/collections", json={"name": name, **config}).status_code == 201
    r = gw.client.post(f"/v1/collections/{name}/documents", json={"documents": docs})
    assert r.status_code == 200, r.text
    return name


def browse_all(gw: Gateway, name: str, limit: int, filter: dict | None = None) -> list[list[dict]]:
    pages, cursor = [], None
    while True:
        params: dict[str, str | int] = {"limit": limit}
        if cursor:
            params["cursor"] = cursor
        if filter is not None:
            params["filter"] = json.dumps(filter)
        r = gw.client.get(f"/v1/collections/{name}/documents", params=params)
        assert r.status_code == 200, r.text
        body = r.json()
        assert set(body) == {"documents", "next_cursor"}
        pages.append(body["documents"])
        cursor = body["next_cursor"]
        if cursor is None:
            return pages
        assert len(pages) < 100


def ids(pages: list[list[dict]]) -> list[str]:
    return [d["id"] for page in pages for d in page]


@pytest.mark.parametrize("chunked", [False, True])
def test_browse_pages_through_every_document_exactly_once(gw, chunked):
    docs = documents(23, words=120 if chunked else 12)
    config = {"chunking": {"max_tokens": 32, "overlap": 4}} if chunked else {}
    name = make_collection(gw, docs, **config)
    pages = browse_all(gw, name, limit=5)
    seen = ids(pages)
    assert sorted(seen) == sorted(d["id"] for d in docs)  # each once: no chunk of a chunked document twice
    assert [len(p) for p in pages[:-1]] == [5] * (len(pages) - 1) and 1 <= len(pages[-1]) <= 5
    # whole documents, as GET returns them (chunked: the whole text, not a chunk's)
    by_id = {d["id"]: d for d in docs}
    for page in pages:
        for d in page:
            expected = by_id[d["id"]]
            assert d == {k: expected[k] for k in ("id", "text", "title", "metadata")}
    # stable order: the same pages again
    assert browse_all(gw, name, limit=5) == pages
    # one big page is the same order as the small pages
    assert ids(browse_all(gw, name, limit=1000)) == seen
    assert gw.client.get(f"/v1/collections/{name}").json()["count"] == len(docs)


def test_browse_with_a_filter_follows_the_search_filter_rules(gw):
    docs = documents(20, words=12)
    name = make_collection(gw, docs)
    cases = [
        ({"group": 1}, lambda d: d["metadata"]["group"] == 1),
        ({"group": [0, 2]}, lambda d: d["metadata"]["group"] in (0, 2)),
        ({"even": True}, lambda d: d["metadata"]["even"]),
        ({"source": "s3", "even": False}, lambda d: d["metadata"]["source"] == "s3" and not d["metadata"]["even"]),
        ({"source": "none-such"}, lambda d: False),
        ({}, lambda d: True),
    ]
    for condition, keep in cases:
        expected = sorted(d["id"] for d in docs if keep(d))
        assert sorted(ids(browse_all(gw, name, limit=3, filter=condition))) == expected, condition


def test_bad_filter_cursor_or_limit_is_a_422_naming_it(gw):
    name = make_collection(gw, documents(3, words=8))
    url = f"/v1/collections/{name}/documents"
    cases = [
        ({"filter": "{not json"}, "filter"),
        ({"filter": "[1, 2]"}, "filter"),
        ({"filter": '{"bad key": 1}'}, "filter"),
        ({"filter": '{"k": null}'}, "filter"),
        ({"filter": '{"k": []}'}, "filter"),
        ({"filter": '{"k": {"nested": 1}}'}, "filter"),
        ({"filter": '{"k": NaN}'}, "filter"),
        ({"filter": "[" * 5000}, "filter"),
        ({"cursor": "not-a-cursor"}, "cursor"),
        ({"cursor": "1' OR 1=1"}, "cursor"),
        ({"limit": 0}, "limit"),
        ({"limit": 1001}, "limit"),
        ({"limit": "ten"}, "limit"),
    ]
    for params, field in cases:
        r = gw.client.get(url, params=params)
        assert r.status_code == 422, (params, r.text)
        assert r.headers["content-type"].startswith("application/problem+json")
        assert field in r.text and "Traceback" not in r.text
    assert gw.client.get("/v1/collections/no_such_one/documents").status_code == 404


@pytest.mark.parametrize("chunked", [False, True])
def test_delete_by_filter_removes_exactly_the_matching_documents_and_their_chunks(gw, chunked):
    docs = documents(18, words=120 if chunked else 12)
    config = {"chunking": {"max_tokens": 32, "overlap": 4}} if chunked else {}
    name = make_collection(gw, docs, **config)
    url = f"/v1/collections/{name}/documents/delete"
    r = gw.client.post(url, json={"filter": {"group": 1}})
    assert r.status_code == 200 and r.json() == {"deleted": 6}, r.text
    gone = {d["id"] for d in docs if d["metadata"]["group"] == 1}
    kept = sorted(d["id"] for d in docs if d["id"] not in gone)
    assert sorted(ids(browse_all(gw, name, limit=7))) == kept
    assert gw.client.get(f"/v1/collections/{name}").json()["count"] == len(kept)
    # no chunk of a deleted document is left to be found
    for query in ("tide moon gravity number 4", "ocean wave shore number 7"):
        r = gw.client.post(f"/v1/collections/{name}/search", json={"query": query, "top_k": 100})
        found = [h["id"] for h in r.json()["results"]]
        assert not gone & set(found) and sorted(found) == kept
    assert gw.client.get(f"/v1/collections/{name}/documents/{docs[1]['id']}").status_code == 404

    r = gw.client.post(url, json={"ids": [kept[0], kept[0], kept[1], "never-there"]})
    assert r.json() == {"deleted": 2}
    assert gw.client.post(url, json={"filter": {"group": 1}}).json() == {"deleted": 0}
    assert gw.client.get(f"/v1/collections/{name}").json()["count"] == len(kept) - 2


def test_delete_needs_one_non_empty_selection(gw):
    name = make_collection(gw, documents(4, words=8))
    url = f"/v1/collections/{name}/documents/delete"
    for body in ({"filter": {}}, {}, {"filter": {"group": 1}, "ids": ["a"]}, {"ids": []}, {"filter": {"k": None}}):
        r = gw.client.post(url, json=body)
        assert r.status_code == 422, (body, r.text)
        assert r.headers["content-type"].startswith("application/problem+json")
    assert gw.client.get(f"/v1/collections/{name}").json()["count"] == 4
    assert gw.client.post("/v1/collections/no_such_one/documents/delete", json={"ids": ["a"]}).status_code == 404
