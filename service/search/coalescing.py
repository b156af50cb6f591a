"""Coalescing: identical cold queries share one piece of work, in this process (InFlight) and across replicas."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from service import metrics
from service.clients.leases import Leases, LeaseUnavailable

T = TypeVar("T")


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
