"""Coalescing: identical cold queries share one think -> embed -> fuse, in this process and across replicas.

In this process (InFlight), the first searcher of a key owns the work and resolves a future with the finished
query (or None when the worker failed); every identical search that arrives meanwhile awaits that future. Waiters
are counted so that an owner whose client went away cancels the work only when nobody else waits on it. Across
replicas (AcrossReplicas), a short Redis lease per key decides which replica asks the worker.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from service.observability import metrics
from service.redis.leases import Leases, LeaseUnavailable

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


class AcrossReplicas:
    """One worker request per distinct cold query across gateway replicas.

    The replica that takes the key's lease (Redis `SET NX PX`) does the work, renewing the lease while it runs;
    the others poll for the result it stores, for as long as its lease lives. A holder that dies stops renewing,
    its lease expires within `lease_ms`, and a waiter takes the work over. With Redis unreachable, every replica
    does its own work: no answer is ever held up by the arbitration.
    """

    def __init__(self, leases: Leases, *, lease_ms: int, poll_s: float = 0.05) -> None:
        self._leases = leases
        self._lease_ms = lease_ms
        self._poll_s = poll_s

    async def once(
        self, key: str, work: Callable[[], Awaitable[T | None]], result: Callable[[], Awaitable[T | None]]
    ) -> tuple[T | None, bool]:
        """`(value, shared)`: `work()` done here (shared False), or what another replica's work stored, as
        `result()` reads it (shared True)."""
        while True:
            try:
                token = await self._leases.acquire(key, self._lease_ms)
            except LeaseUnavailable:
                return await work(), False
            if token is not None:
                renewing = asyncio.ensure_future(self._renew(key, token))
                try:
                    return await work(), False
                finally:
                    renewing.cancel()
                    await self._leases.release(key, token)
            while await self._leases.held(key):
                if (found := await result()) is not None:
                    metrics.REPLICA_COALESCED.inc()
                    return found, True
                await asyncio.sleep(self._poll_s)
            if (found := await result()) is not None:  # finished between the last two looks
                metrics.REPLICA_COALESCED.inc()
                return found, True
            # The holder died or failed without a result: try to take the work over.

    async def _renew(self, key: str, token: str) -> None:
        while True:
            await asyncio.sleep(self._lease_ms / 3000)
            if not await self._leases.extend(key, token, self._lease_ms):
                return
