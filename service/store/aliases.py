"""Aliases: a name that searches, writes and reads follow to a collection, moved atomically (zero-downtime reindex).

On a Qdrant server they are Qdrant's own aliases (store/qdrant_aliases.py): one atomic change on the server, seen
by every replica. An embedded store has no aliases of its own: a JSON file beside its collections, replaced
atomically (a rename), serves the one process that owns the folder.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Protocol

from service.store.edge.disk import write_json

ALIASES_FILE = "aliases.json"


class AliasTable(Protocol):
    async def all(self) -> dict[str, str]:
        """alias -> collection"""

    async def put(self, alias: str, collection: str) -> None:
        """Creates the alias, or moves it to `collection`, in one atomic change."""

    async def remove(self, aliases: list[str]) -> None:
        """Removes these aliases (those that exist) in one change."""


class FileAliases:
    def __init__(self, root: str | Path) -> None:
        self._path = Path(root) / ALIASES_FILE
        self._lock = asyncio.Lock()

    async def all(self) -> dict[str, str]:
        return await asyncio.to_thread(self._read)

    async def put(self, alias: str, collection: str) -> None:
        async with self._lock:
            table = await asyncio.to_thread(self._read)
            table[alias] = collection
            await asyncio.to_thread(self._write, table)

    async def remove(self, aliases: list[str]) -> None:
        async with self._lock:
            table = await asyncio.to_thread(self._read)
            if any(a in table for a in aliases):
                await asyncio.to_thread(self._write, {k: v for k, v in table.items() if k not in aliases})

    def _read(self) -> dict[str, str]:
        try:
            data = json.loads(self._path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}

    def _write(self, table: dict[str, str]) -> None:
        # Under the lock; a reader sees the old table or the new one, never half of one (and after a crash too).
        self._path.parent.mkdir(parents=True, exist_ok=True)
        write_json(self._path, dict(sorted(table.items())))
