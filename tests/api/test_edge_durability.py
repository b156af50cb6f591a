"""What a 200 acknowledged survives a SIGKILL: a real `thinksearch serve` process on a Qdrant Edge folder, killed and
restarted on the same folder."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import httpx

from tests.support.servers import REPO_ROOT, free_port, wait_http


def start_gateway(folder, cwd) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("QDRANT_", "REDIS_", "THINKER_", "EMBEDDER_"))},
        "QDRANT_PATH": str(folder),
        "QDRANT_EMBEDDED": "edge",
        "PYTHONPATH": str(REPO_ROOT),
    }
    proc = subprocess.Popen(
        [sys.executable, "-c", "from service.cli import main; main()", "serve", "--port", str(port)],
        cwd=cwd,  # no .env of the repository
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/readyz", timeout=180, proc=proc)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    return proc, url


def test_acknowledged_writes_survive_sigkill(tmp_path):
    folder = tmp_path / "store"
    docs = [
        {"id": f"doc-{i}", "text": f"document number {i} about topic {i % 7}", "metadata": {"k": i % 3}}
        for i in range(120)
    ]
    proc, url = start_gateway(folder, tmp_path)
    try:
        with httpx.Client(base_url=url, timeout=120) as c:
            assert c.post("/v1/collections", json={"name": "durable"}).status_code == 201
            for start in range(0, len(docs), 40):
                r = c.post("/v1/collections/durable/documents", json={"documents": docs[start : start + 40]})
                assert r.status_code == 200, r.text
            assert c.delete("/v1/collections/durable/documents/doc-5").status_code == 204
            # The last acknowledged write, then the kill: no clean shutdown, no flush.
            r = c.post("/v1/collections/durable/documents", json={"documents": [{"id": "last", "text": "x"}]})
            assert r.status_code == 200
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()

    proc, url = start_gateway(folder, tmp_path)
    try:
        with httpx.Client(base_url=url, timeout=120) as c:
            detail = c.get("/v1/collections/durable").json()
            assert detail["count"] == 120 - 1 + 1 and detail["embedder"]
            for doc in docs:
                r = c.get(f"/v1/collections/durable/documents/{doc['id']}")
                if doc["id"] == "doc-5":
                    assert r.status_code == 404
                else:
                    assert r.status_code == 200 and r.json()["text"] == doc["text"]
            assert c.get("/v1/collections/durable/documents/last").status_code == 200
            hits = c.post("/v1/collections/durable/search", json={"query": "topic", "filter": {"k": 1}, "top_k": 100})
            assert {h["id"] for h in hits.json()["results"]} == {d["id"] for d in docs if d["metadata"]["k"] == 1}
    finally:
        proc.terminate()
        proc.wait(timeout=30)
