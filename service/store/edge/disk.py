"""The Edge store's folder layout and its durability: atomic, fsynced metadata, and recovery after a crash.

Layout under the store folder (QDRANT_PATH):

    <collection>/meta.json     dimension, embedder, profile, HNSW parameters, indexed payload keys (Edge shards have
                               no collection metadata of their own) and which shard folder is live; written
                               atomically and fsynced
    <collection>/shard/        the Edge shard (segments + WAL: an update is in the WAL before `update` returns);
                               after an index build the live shard is `shard.<hex>`, named in meta.json
    <collection>/shard.<hex>/  a copy being indexed by a child process (see indexing.py)
    .<collection>.<hex>.creating/, .<collection>.<hex>.dropped/
                               a collection being made or deleted (renamed into place or away, so that a crash
                               never leaves a half-made or half-deleted collection under its name)
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

META = "meta.json"
SHARD = "shard"
_BUILD = "shard.build"  # the layout before meta.json named the live shard: still recovered
_OLD = "shard.old"
# The API's collection-name pattern: any other folder (a hidden leftover of a crash mid-create or mid-drop, say)
# is not a collection.
_COLLECTION_NAME = re.compile(r"[a-zA-Z0-9_-]{1,64}")


def collection_names(root: Path) -> list[str]:
    """The collections under the store folder, sorted."""
    return sorted(p.parent.name for p in root.glob(f"*/{META}") if _COLLECTION_NAME.fullmatch(p.parent.name))


def write_json(path: Path, value: dict[str, Any]) -> None:
    """Atomic and durable: a reader sees the old file or the new one, after a crash too."""
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w") as f:
        json.dump(value, f)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)
    fsync_dir(path.parent)


def fsync_dir(folder: Path) -> None:
    """Makes the folder's entries (a rename into it, a file replaced) durable."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def recover_swap(folder: Path, live: str) -> str:
    """Finishes or forgets a build interrupted by a crash; returns the live shard's folder name.

    meta.json names the live shard; any other shard folder is a copy whose swap never happened (or the old shard
    after one that did) and is deleted. Collections from before that pointer swapped by renames: a crash between
    `shard -> shard.old` and `shard.build -> shard` left the complete copy, which is renamed into place.
    """
    shard, build, old = folder / live, folder / _BUILD, folder / _OLD
    if live == SHARD and not shard.exists():
        (build if build.exists() else old).rename(shard)
        fsync_dir(folder)
    for leftover in folder.glob(f"{SHARD}*"):
        if leftover.name != live:
            shutil.rmtree(leftover, ignore_errors=True)
    return live
