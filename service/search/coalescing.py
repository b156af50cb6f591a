"""Coalescing: identical cold queries in flight in this process share one piece of work."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable


class InFlight:
    """Identical cold queries in flight in this process share one thinker request."""

    def __init__(self) -> None:
        self._tasks: dict[str, asyncio.Task[list[str] | None]] = {}

    def join(self, key: str, start: Callable[[], Awaitable[list[str] | None]]) -> tuple[asyncio.Task, bool]:
        task = self._tasks.get(key)
        if task is not None:
            return task, True
        task = asyncio.ensure_future(start())
        self._tasks[key] = task
        task.add_done_callback(lambda t: self._tasks.pop(key, None) if self._tasks.get(key) is t else None)
        return task, False

    async def cancel_all(self) -> None:
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
