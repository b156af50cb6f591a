"""Coalescing: identical cold queries in flight in this process share one think -> embed -> fuse.

The first searcher of a key owns the work and resolves a future with the finished query (or None when the
worker failed); every identical search that arrives meanwhile awaits that future. Waiters are counted so that
an owner whose client went away cancels the work only when nobody else waits on it.
"""

from __future__ import annotations

import asyncio
from typing import Generic, TypeVar

T = TypeVar("T")


class InFlight(Generic[T]):
    def __init__(self) -> None:
        self._futures: dict[str, asyncio.Future[T | None]] = {}
        self._waiters: dict[str, int] = {}
        self._work: dict[str, asyncio.Task] = {}

    def __len__(self) -> int:
        return len(self._futures)

    def claim(self, key: str) -> tuple[asyncio.Future[T | None], bool]:
        """The future of `key` and whether the caller owns it (must resolve it or call `drop`)."""
        future = self._futures.get(key)
        owned = future is None
        if future is None:
            future = asyncio.get_running_loop().create_future()
            self._futures[key] = future
        self._waiters[key] = self._waiters.get(key, 0) + (0 if owned else 1)
        return future, owned

    def leave(self, key: str, future: asyncio.Future[T | None]) -> None:
        """A waiter (not the owner) stops waiting on `future`."""
        if self._futures.get(key) is future:
            self._waiters[key] = max(0, self._waiters[key] - 1)

    def waiters(self, key: str) -> int:
        return self._waiters.get(key, 0)

    def attach(self, key: str, task: asyncio.Task) -> None:
        """The task doing the owner's work: cancelled on shutdown."""
        self._work[key] = task

    def resolve(self, key: str, value: T | None) -> None:
        future = self._futures.pop(key, None)
        self._waiters.pop(key, None)
        self._work.pop(key, None)
        if future is not None and not future.done():
            future.set_result(value)

    def drop(self, key: str) -> None:
        """The owner gives up with nobody waiting: forget the key and cancel its work."""
        task = self._work.get(key)
        if task is not None:
            task.cancel()
        self.resolve(key, None)

    async def cancel_all(self) -> None:
        tasks = list(self._work.values())
        for key in list(self._futures):
            self.drop(key)
        await asyncio.gather(*tasks, return_exceptions=True)
