"""Client side of snapshots (`thinksearch snapshot`, `thinksearch restore`): REST calls with progress bars.

thinksearch snapshot --collection C [--out FILE]         take one (and download it to FILE)
thinksearch restore --collection C (--snapshot ID | --file FILE) [--replace]
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
from tqdm import tqdm

CHUNK_BYTES = 1 << 20


def _client(url: str, api_key: str | None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    return httpx.Client(base_url=url, headers=headers, timeout=httpx.Timeout(600.0, connect=10.0))


def _check(r: httpx.Response, what: str, *ok: int) -> httpx.Response:
    if r.status_code not in ok:
        raise SystemExit(f"{what}: {r.status_code} {r.text[:500]}")
    return r


def take(http: httpx.Client, collection: str, out: Path | None) -> dict[str, Any]:
    started = time.perf_counter()
    snapshot = _check(http.post(f"/v1/collections/{collection}/snapshots"), "snapshot", 201).json()
    print(
        f"snapshot {snapshot['snapshot']} of {collection}: {snapshot['count']} documents, "
        f"{snapshot['size_bytes'] / 1e6:.1f} MB, {time.perf_counter() - started:.1f}s"
    )
    if out is not None:
        download(http, collection, snapshot["snapshot"], out, snapshot["size_bytes"])
    return snapshot


def download(http: httpx.Client, collection: str, snapshot_id: str, out: Path, size: int | None = None) -> None:
    partial = out.with_name(out.name + ".partial")
    with http.stream("GET", f"/v1/collections/{collection}/snapshots/{snapshot_id}") as r:
        if r.status_code != 200:
            r.read()
            _check(r, "download", 200)
        total = size or int(r.headers.get("content-length", 0)) or None
        with open(partial, "wb") as f, tqdm(total=total, desc="download", unit="B", unit_scale=True) as bar:
            for block in r.iter_bytes(CHUNK_BYTES):
                f.write(block)
                bar.update(len(block))
    partial.replace(out)
    print(f"written to {out}")


def _file_chunks(path: Path, bar: tqdm) -> Iterator[bytes]:
    with path.open("rb") as f:
        while block := f.read(CHUNK_BYTES):
            bar.update(len(block))
            yield block


def restore(
    http: httpx.Client, collection: str, *, snapshot: str | None, file: Path | None, replace: bool
) -> dict[str, Any]:
    if file is not None:
        with tqdm(total=os.path.getsize(file), desc="upload", unit="B", unit_scale=True) as bar:
            r = http.post(
                f"/v1/collections/{collection}/restore",
                params={"replace": "true"} if replace else None,
                content=_file_chunks(file, bar),
                headers={"Content-Type": "application/octet-stream"},
            )
    else:
        r = http.post(f"/v1/collections/{collection}/restore", json={"snapshot": snapshot, "replace": replace})
    job = follow(http, _check(r, "restore", 202).json()["job_id"])
    progress = job.get("restore") or {}
    print(
        f"job {job['job_id']}: {job['status']}, {progress.get('count')} documents restored"
        + (f": {job['error']}" if job.get("error") else "")
    )
    return job


def follow(http: httpx.Client, job_id: str, poll_s: float = 0.5) -> dict[str, Any]:
    """Polls the restore job until it ends, with a bar of its bytes."""
    job = http.get(f"/v1/jobs/{job_id}").json()
    with tqdm(total=(job.get("restore") or {}).get("bytes"), desc="restore", unit="B", unit_scale=True) as bar:
        while True:
            progress = job.get("restore") or {}
            bar.set_postfix_str(progress.get("stage", ""))
            bar.update(progress.get("done_bytes", 0) - bar.n)
            if job["status"] not in ("queued", "running"):
                break
            time.sleep(poll_s)
            r = http.get(f"/v1/jobs/{job_id}")
            if r.status_code == 200:
                job = r.json()
    return job


def snapshot_command(args: argparse.Namespace) -> None:
    with _client(args.url, args.api_key or os.environ.get("THINKSEARCH_API_KEY")) as http:
        take(http, args.collection, Path(args.out) if args.out else None)


def restore_command(args: argparse.Namespace) -> None:
    with _client(args.url, args.api_key or os.environ.get("THINKSEARCH_API_KEY")) as http:
        file = Path(args.file) if args.file else None
        job = restore(http, args.collection, snapshot=args.snapshot, file=file, replace=args.replace)
    raise SystemExit(0 if job["status"] == "succeeded" else 1)


def add_snapshot_commands(sub: argparse._SubParsersAction) -> None:
    p_snapshot = sub.add_parser("snapshot", help="take a consistent snapshot of a collection (and download it)")
    p_snapshot.add_argument("--collection", required=True)
    p_snapshot.add_argument("--out", default=None, help="download the snapshot file here")
    p_snapshot.add_argument("--url", default="http://127.0.0.1:8000")
    p_snapshot.add_argument("--api-key", default=None, help="or THINKSEARCH_API_KEY (scope admin)")
    p_snapshot.set_defaults(func=snapshot_command)

    p_restore = sub.add_parser("restore", help="restore a collection from a snapshot (by id, or a snapshot file)")
    p_restore.add_argument("--collection", required=True)
    source = p_restore.add_mutually_exclusive_group(required=True)
    source.add_argument("--snapshot", help="the id of one of the collection's snapshots")
    source.add_argument("--file", help="a snapshot file (from `thinksearch snapshot --out`)")
    p_restore.add_argument("--replace", action="store_true", help="replace the collection if it exists")
    p_restore.add_argument("--url", default="http://127.0.0.1:8000")
    p_restore.add_argument("--api-key", default=None, help="or THINKSEARCH_API_KEY (scope admin)")
    p_restore.set_defaults(func=restore_command)
