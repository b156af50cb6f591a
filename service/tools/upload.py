"""Client side of bulk ingestion (`thinksearch ingest`, `thinksearch eval`): stream a JSONL file to the bulk
endpoint and follow its job with a progress bar.

BEIR's `corpus.jsonl` is accepted as is: `_id` becomes `id`, `title` and `text` stay, every other field goes into
`metadata` (an object field such as BEIR's `metadata` is merged into it). Lines that are not JSON objects are
sent unchanged, so the service reports them with their line numbers.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
from tqdm import tqdm

CHUNK_BYTES = 256 * 1024
DOCUMENT_FIELDS = ("id", "title", "text", "metadata")


def to_document(obj: dict[str, Any]) -> dict[str, Any]:
    doc: dict[str, Any] = {"id": obj["_id"] if "_id" in obj and "id" not in obj else obj.get("id")}
    for key in ("title", "text"):
        if key in obj:
            doc[key] = obj[key]
    metadata: dict[str, Any] = {}
    for key, value in obj.items():
        if key in ("_id", *DOCUMENT_FIELDS):
            continue
        metadata[key] = value
    if isinstance(obj.get("metadata"), dict):
        metadata.update(obj["metadata"])
    if metadata:
        doc["metadata"] = metadata
    if doc["id"] is None:
        del doc["id"]
    return doc


def convert_line(raw: bytes) -> bytes:
    try:
        obj = json.loads(raw)
    except ValueError:
        return raw
    if not isinstance(obj, dict):
        return raw
    return json.dumps(to_document(obj), ensure_ascii=False).encode()


def ndjson_chunks(path: Path, progress: tqdm | None = None) -> Iterator[bytes]:
    """The file converted line by line (one line out per line in: line numbers match), in chunks."""
    buffer = bytearray()
    with path.open("rb") as f:
        for raw in f:
            stripped = raw.rstrip(b"\r\n")
            buffer += (convert_line(stripped) if stripped.strip() else b"") + b"\n"
            if progress is not None:
                progress.update(len(raw))
            if len(buffer) >= CHUNK_BYTES:
                yield bytes(buffer)
                buffer.clear()
    if buffer:
        yield bytes(buffer)


def ensure_collection(http: httpx.Client, name: str) -> None:
    r = http.post("/v1/collections", json={"name": name})
    if r.status_code not in (201, 409):
        raise SystemExit(f"creating collection {name}: {r.status_code} {r.text[:500]}")


def submit(http: httpx.Client, path: Path, collection: str) -> str:
    with tqdm(total=os.path.getsize(path), desc="upload", unit="B", unit_scale=True) as bar:
        r = http.post(
            f"/v1/collections/{collection}/documents/bulk",
            content=ndjson_chunks(path, bar),
            headers={"Content-Type": "application/x-ndjson"},
        )
    if r.status_code != 202:
        raise SystemExit(f"bulk upload: {r.status_code} {r.text[:500]}")
    return r.json()["job_id"]


def follow(http: httpx.Client, job_id: str, poll_s: float = 1.0) -> dict[str, Any]:
    """Polls the job until it ends, with a bar of written documents (documents/s, ETA)."""
    job = http.get(f"/v1/jobs/{job_id}").json()
    with tqdm(total=job["accepted"], desc=f"job {job_id[:8]}", unit="doc") as bar:
        while True:
            bar.total = job["accepted"]
            bar.update(job["processed"] - bar.n)
            if job["status"] not in ("queued", "running"):
                break
            time.sleep(poll_s)
            r = http.get(f"/v1/jobs/{job_id}")
            if r.status_code == 200:
                job = r.json()
    return job


def ingest_file(http: httpx.Client, path: Path, collection: str, *, create: bool) -> dict[str, Any]:
    if create:
        ensure_collection(http, collection)
    job = follow(http, submit(http, path, collection))
    print(
        f"job {job['job_id']}: {job['status']}, {job['processed']} written, {job['failed']} rejected"
        + (f", {job['truncated']} truncated" if job.get("truncated") else "")
        + (f", {job['documents_per_second']:.1f} documents/s" if job.get("documents_per_second") else "")
    )
    for error in job["errors"][:10]:
        print(f"  line {error['line']} (id {error['id']}): {error['error']}")
    if job.get("error"):
        print(f"  {job['error']}")
    return job


def run_ingest(*, base_url: str, path: str, collection: str, create: bool, api_key: str | None) -> int:
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    with httpx.Client(base_url=base_url, headers=headers, timeout=httpx.Timeout(300.0, connect=10.0)) as http:
        job = ingest_file(http, Path(path), collection, create=create)
    return 0 if job["status"] == "succeeded" else 1
