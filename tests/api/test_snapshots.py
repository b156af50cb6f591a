"""Snapshots and restore through the REST API, on Edge and on a Qdrant server (the test stand-in): a snapshot taken
while a bulk job writes, the collection deleted, restored from the snapshot by id and from the uploaded file."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from service.cli import main
from service.settings import Settings
from tests.ingest.support import NDJSON, ndjson, scifact, wait_job
from tests.support.gateway import Gateway
from tests.support.qdrant_standin import QdrantStandin

QUERIES = ["vitamin D deficiency", "gene expression in cancer cells", "antibiotic resistance", "sleep and memory"]
OCTET = {"content-type": "application/octet-stream"}


@pytest.fixture(scope="module", params=["edge", "server"])
def gw(request, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    root = tmp_path_factory.mktemp(f"snapshots-{request.param}")
    if request.param == "edge":
        settings = Settings(_env_file=None, qdrant_path=str(root / "qdrant"), max_text_chars=2000)
        with Gateway(settings) as gateway:
            yield gateway
        assert (root / "snapshots").is_dir()  # SNAPSHOT_PATH's default: beside QDRANT_PATH
        return
    with QdrantStandin(str(root / "standin")) as standin:
        settings = Settings(
            _env_file=None, qdrant_url=standin.url, snapshot_path=str(root / "snapshots"), max_text_chars=2000
        )
        with Gateway(settings) as gateway:
            yield gateway


def searches(gw: Gateway, name: str) -> list[list]:
    """Dense results with scores, and hybrid ones as sets: the stand-in's local mode breaks ties of BM25 scores by
    insertion order, which a restore by upsert changes (so RRF ranks among tied documents may differ)."""
    found = []
    for query in QUERIES:
        for retrieval in ("dense", "hybrid"):
            body = {"query": query, "top_k": 10, "think": False, "retrieval": retrieval}
            r = gw.client.post(f"/v1/collections/{name}/search", json=body)
            assert r.status_code == 200, r.text
            hits = [(hit["id"], round(hit["score"], 5)) for hit in r.json()["results"]]
            found.append(hits if retrieval == "dense" else sorted(h[0] for h in hits))
    return found


def bulk(gw: Gateway, name: str, docs: list[dict]) -> str:
    r = gw.client.post(f"/v1/collections/{name}/documents/bulk", content=ndjson(docs), headers=NDJSON)
    assert r.status_code == 202, r.text
    return r.json()["job_id"]


def restored(gw: Gateway, response) -> dict:
    assert response.status_code == 202, response.text
    assert response.json()["kind"] == "restore"
    job = wait_job(gw.client, response.json()["job_id"], timeout=300)
    assert job["status"] == "succeeded", job
    assert job["restore"]["stage"] == "done" and job["restore"]["done_bytes"] == job["restore"]["bytes"] > 0
    return job


def test_snapshot_during_a_bulk_job_then_delete_and_restore(gw: Gateway, tmp_path: Path):
    c = gw.client
    assert c.post("/v1/collections", json={"name": "sci", "think": {"enabled": False}}).status_code == 201
    first = scifact(150, text_chars=300)
    wait_job(c, bulk(gw, "sci", first))
    job_id = bulk(gw, "sci", scifact(400, offset=150, text_chars=300))
    wait_job(c, job_id, until=lambda job: job["processed"] >= 50)
    r = c.post("/v1/collections/sci/snapshots")
    assert r.status_code == 201, r.text
    snapshot = r.json()
    assert set(snapshot) >= {"snapshot", "created_at", "count", "size_bytes"}
    during = c.get(f"/v1/jobs/{job_id}").json()
    assert wait_job(c, job_id)["status"] == "succeeded"
    assert during["processed"] < during["accepted"], "the bulk job ended before the snapshot"
    assert 150 < snapshot["count"] < 550

    # Taken again while nothing writes: the searches to compare with.
    quiet = c.post("/v1/collections/sci/snapshots").json()
    assert quiet["count"] == 550
    before = searches(gw, "sci")
    listed = c.get("/v1/collections/sci/snapshots").json()["snapshots"]
    assert [s["snapshot"] for s in listed] == [snapshot["snapshot"], quiet["snapshot"]]

    # Download, delete the collection: the snapshots stay.
    download = c.get(f"/v1/collections/sci/snapshots/{quiet['snapshot']}")
    assert download.status_code == 200 and len(download.content) == quiet["size_bytes"]
    (tmp_path / "quiet.tar").write_bytes(download.content)
    assert c.delete("/v1/collections/sci").status_code == 204
    assert len(c.get("/v1/collections/sci/snapshots").json()["snapshots"]) == 2

    # The mid-bulk snapshot: exactly the documents it counted, whole.
    job = restored(gw, c.post("/v1/collections/sci/restore", json={"snapshot": snapshot["snapshot"]}))
    count = c.get("/v1/collections/sci").json()["count"]
    assert job["restore"]["count"] == count
    if gw.settings.qdrant_url is None:
        assert count == snapshot["count"]
    else:  # a server's count is read just after its snapshot
        assert 150 < count <= snapshot["count"]
    sent = {d["id"]: d for d in scifact(550, text_chars=300)}
    for doc_id in [d["id"] for d in first[:5]]:
        got = c.get(f"/v1/collections/sci/documents/{doc_id}").json()
        assert (got["title"], got["text"]) == (sent[doc_id]["title"], sent[doc_id]["text"])
    assert c.get("/v1/collections/sci").json()["think"]["enabled"] is False  # the think policy came back

    # 409 without replace; the uploaded file of the quiet snapshot with replace: the searches as they were.
    r = c.post("/v1/collections/sci/restore", json={"snapshot": quiet["snapshot"]})
    assert r.status_code == 409, r.text
    upload = (tmp_path / "quiet.tar").read_bytes()
    restored(gw, c.post("/v1/collections/sci/restore?replace=true", content=upload, headers=OCTET))
    assert c.get("/v1/collections/sci").json()["count"] == 550
    assert searches(gw, "sci") == before

    # Into a new name, from the file.
    restored(gw, c.post("/v1/collections/sci2/restore", content=upload, headers=OCTET))
    assert searches(gw, "sci2") == before


def test_a_corrupted_or_truncated_upload_is_refused_and_changes_nothing(gw: Gateway):
    c = gw.client
    assert c.post("/v1/collections", json={"name": "kept"}).status_code == 201
    wait_job(c, bulk(gw, "kept", scifact(20, text_chars=200)))
    snapshot = c.post("/v1/collections/kept/snapshots").json()
    good = c.get(f"/v1/collections/kept/snapshots/{snapshot['snapshot']}").content
    corrupted = bytearray(good)
    corrupted[len(good) // 2] ^= 0xFF
    before = (c.get("/v1/collections").json(), c.get("/v1/collections/kept/snapshots").json())
    for bad in (bytes(corrupted), good[: len(good) // 3], b"", b"garbage" * 99):
        for target in ("kept/restore?replace=true", "fresh/restore"):
            r = c.post(f"/v1/collections/{target}", content=bad, headers=OCTET)
            assert r.status_code == 422, r.text
            assert r.headers["content-type"].startswith("application/problem+json")
            assert "nothing was changed" in r.json()["detail"]
    assert (c.get("/v1/collections").json(), c.get("/v1/collections/kept/snapshots").json()) == before
    assert c.get("/v1/collections/fresh").status_code == 404


def test_snapshot_errors_and_explicit_delete(gw: Gateway):
    c = gw.client
    assert c.post("/v1/collections/nothing-here/snapshots").status_code == 404
    assert c.post("/v1/collections", json={"name": "del"}).status_code == 201
    snapshot = c.post("/v1/collections/del/snapshots").json()
    path = f"/v1/collections/del/snapshots/{snapshot['snapshot']}"
    assert c.get("/v1/collections/del/snapshots/20000101T000000000Z-00000000").status_code == 404
    assert c.get("/v1/collections/del/snapshots/..%2F..%2Fetc").status_code == 404
    assert c.post("/v1/collections/del/restore", json={"snapshot": "nope"}).status_code == 422
    assert (
        c.post("/v1/collections/del/restore", content=b"{}", headers={"content-type": "text/plain"}).status_code == 415
    )
    # A snapshot is restored only under its own collection's name (another's is downloaded and uploaded).
    r = c.post("/v1/collections/other/restore", json={"snapshot": snapshot["snapshot"]})
    assert r.status_code == 404
    assert c.delete(path).status_code == 204
    assert c.get(path).status_code == 404
    assert c.delete(path).status_code == 404
    assert c.get("/v1/collections/del/snapshots").json() == {"snapshots": []}


def test_the_cli_takes_downloads_and_restores_a_snapshot(gw: Gateway, tmp_path: Path):
    c = gw.client
    assert c.post("/v1/collections", json={"name": "cli"}).status_code == 201
    wait_job(c, bulk(gw, "cli", scifact(15, text_chars=200)))
    out = tmp_path / "cli.tar"
    main(["snapshot", "--collection", "cli", "--out", str(out), "--url", gw.url])
    [listed] = c.get("/v1/collections/cli/snapshots").json()["snapshots"]
    assert out.stat().st_size == listed["size_bytes"]
    assert c.delete("/v1/collections/cli").status_code == 204
    with pytest.raises(SystemExit) as restored_by_id:
        main(["restore", "--collection", "cli", "--snapshot", listed["snapshot"], "--url", gw.url])
    assert restored_by_id.value.code == 0
    with pytest.raises(SystemExit) as refused:  # exists, no --replace: the job is never started
        main(["restore", "--collection", "cli", "--file", str(out), "--url", gw.url])
    assert "409" in str(refused.value.code)
    with pytest.raises(SystemExit) as replaced:
        main(["restore", "--collection", "cli", "--file", str(out), "--replace", "--url", gw.url])
    assert replaced.value.code == 0
    assert c.get("/v1/collections/cli").json()["count"] == 15
