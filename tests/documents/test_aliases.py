"""Aliases: the contract on both backends (Qdrant Edge; a Qdrant server, through the test stand-in), and a
zero-downtime reindex under load across two gateway replicas. Real HTTP, real MiniLM."""

from __future__ import annotations

import threading
import time
import uuid

import httpx
import pytest

from service.settings import Settings
from tests.support.gateway import Gateway
from tests.support.qdrant_standin import QdrantStandin

OLD = [{"id": f"old-{i}", "text": f"the old index, document {i} about tides and the moon"} for i in range(6)]
NEW = [{"id": f"new-{i}", "text": f"the new index, document {i} about tides and the moon"} for i in range(6)]


@pytest.fixture(scope="module")
def standin():
    with QdrantStandin() as qdrant:
        yield qdrant


@pytest.fixture(scope="module", params=["edge", "server"])
def gw(request, tmp_path_factory):
    if request.param == "edge":
        settings = Settings(_env_file=None, qdrant_embedded="edge", qdrant_path=str(tmp_path_factory.mktemp("edge")))
    else:
        settings = Settings(_env_file=None, qdrant_url=request.getfixturevalue("standin").url)
    with Gateway(settings) as gateway:
        yield gateway


def collection(gw: Gateway, docs: list[dict]) -> str:
    name = f"c{uuid.uuid4().hex[:8]}"
    assert gw.client.post("/v1/collections", json={"name": name}).status_code == 201
    assert gw.client.post(f"/v1/collections/{name}/documents", json={"documents": docs}).status_code == 200
    return name


def ids(response: httpx.Response) -> set[str]:
    assert response.status_code == 200, response.text
    return {hit["id"] for hit in response.json()["results"]}


def test_an_alias_is_followed_everywhere_and_moved_atomically(gw):
    old, new = collection(gw, OLD), collection(gw, NEW)
    alias = f"live{uuid.uuid4().hex[:6]}"
    r = gw.client.put(f"/v1/aliases/{alias}", json={"collection": old})
    assert r.status_code == 200 and r.json() == {"alias": alias, "collection": old}
    assert {"alias": alias, "collection": old} in gw.client.get("/v1/aliases").json()["aliases"]

    # Every route that names a collection takes the alias, and says which collection answered.
    r = gw.client.post(f"/v1/collections/{alias}/search", json={"query": "tides", "top_k": 20})
    assert ids(r) == {d["id"] for d in OLD} and r.headers["x-collection"] == old
    batch = gw.client.post(f"/v1/collections/{alias}/search/batch", json={"searches": [{"query": "moon"}]})
    assert batch.status_code == 200 and batch.headers["x-collection"] == old
    detail = gw.client.get(f"/v1/collections/{alias}").json()
    assert detail["name"] == old and detail["count"] == len(OLD)
    assert gw.client.get(f"/v1/collections/{alias}/documents/old-1").json()["id"] == "old-1"
    doc = {"documents": [{"id": "old-extra", "text": "written through the alias"}]}
    assert gw.client.post(f"/v1/collections/{alias}/documents", json=doc).status_code == 200
    assert gw.client.get(f"/v1/collections/{old}/documents/old-extra").status_code == 200
    bulk = gw.client.post(
        f"/v1/collections/{alias}/documents/bulk",
        content=b'{"id": "old-bulk", "text": "bulk through the alias"}\n',
        headers={"Content-Type": "application/x-ndjson"},
    )
    assert bulk.status_code == 202
    assert gw.client.get(f"/v1/jobs/{bulk.json()['job_id']}").json()["collection"] == old

    # Moved: the next search follows it.
    assert gw.client.put(f"/v1/aliases/{alias}", json={"collection": new}).json()["collection"] == new
    assert ids(gw.client.post(f"/v1/collections/{alias}/search", json={"query": "tides", "top_k": 20})) == {
        d["id"] for d in NEW
    }

    # What may not be: shadowing a collection, an alias of an alias, a missing target, a collection named as an
    # alias, dropping a collection under its alias (unless forced).
    assert gw.client.put(f"/v1/aliases/{old}", json={"collection": new}).status_code == 409
    assert gw.client.put(f"/v1/aliases/x{alias}", json={"collection": alias}).status_code == 409
    assert gw.client.put(f"/v1/aliases/x{alias}", json={"collection": "nothing-here"}).status_code == 404
    assert gw.client.put(f"/v1/aliases/x{alias}", json={"collection": "a b"}).status_code == 422
    assert gw.client.post("/v1/collections", json={"name": alias}).status_code == 409
    r = gw.client.delete(f"/v1/collections/{new}")
    assert r.status_code == 409 and alias in r.json()["detail"]
    assert gw.client.delete(f"/v1/collections/{new}?force=true").status_code == 204
    assert alias not in gw.client.get("/v1/aliases").text
    assert gw.client.post(f"/v1/collections/{alias}/search", json={"query": "tides"}).status_code == 404
    assert gw.client.delete(f"/v1/aliases/{alias}").status_code == 404

    other = f"gone{uuid.uuid4().hex[:6]}"
    assert gw.client.put(f"/v1/aliases/{other}", json={"collection": old}).status_code == 200
    assert gw.client.delete(f"/v1/aliases/{other}").status_code == 204
    assert gw.client.get(f"/v1/collections/{other}").status_code == 404


def test_reindex_under_load_through_an_alias_on_two_replicas(standin):
    """Searches at a steady rate through the alias on two gateways sharing a Qdrant server, while a new collection
    is built and the alias moved on one of them: no errors, every answer wholly from the old or the new collection,
    and after the switch (plus the replicas' one-second refresh) only the new."""
    settings = Settings(_env_file=None, qdrant_url=standin.url)
    with Gateway(settings) as one, Gateway(settings) as two:
        old = collection(one, OLD)
        alias = f"live{uuid.uuid4().hex[:6]}"
        assert one.client.put(f"/v1/aliases/{alias}", json={"collection": old}).status_code == 200
        answers: list[tuple[float, str, frozenset[str]]] = []
        errors: list[str] = []
        stop = threading.Event()

        def searcher(gw: Gateway) -> None:
            with httpx.Client(base_url=gw.url, timeout=30) as client:
                while not stop.is_set():
                    sent = time.monotonic()
                    r = client.post(f"/v1/collections/{alias}/search", json={"query": "tides moon", "top_k": 20})
                    if r.status_code != 200:
                        errors.append(f"{r.status_code} {r.text[:200]}")
                    else:
                        answers.append(
                            (sent, r.headers["x-collection"], frozenset(h["id"] for h in r.json()["results"]))
                        )
                    time.sleep(0.02)

        threads = [threading.Thread(target=searcher, args=(gw,)) for gw in (one, two, one, two)]
        for t in threads:
            t.start()
        try:
            time.sleep(1.0)
            new = collection(one, NEW)  # built beside the old while it serves
            switched = time.monotonic()
            assert one.client.put(f"/v1/aliases/{alias}", json={"collection": new}).status_code == 200
            time.sleep(2.0)
        finally:
            stop.set()
            for t in threads:
                t.join()
    assert not errors, errors[:5]
    old_ids, new_ids = frozenset(d["id"] for d in OLD), frozenset(d["id"] for d in NEW)
    assert all((c, got) in ((old, old_ids), (new, new_ids)) for _, c, got in answers), "an answer mixed the two"
    after = [c for sent, c, _ in answers if sent > switched + 1.0]
    assert after and set(after) == {new}
    assert any(c == old for _, c, _ in answers)
    print(f"\nalias switch under load: {len(answers)} searches, {len(errors)} errors, {len(after)} after the switch")
