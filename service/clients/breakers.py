"""Circuit breakers, one per dependency (thinker, embedder, vector store, Redis), on purgatory.

After `threshold` consecutive failures a breaker opens: calls to that dependency fail at once (CircuitOpen, in
microseconds) instead of each waiting for a timeout. After `reset_s` the next call goes through as a probe
(half-open): success closes the breaker, failure opens it again. No restart is needed for a dependency to come back.
Only failures that say the dependency is unwell count (the caller says which); a 4xx for a bad request does not.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from purgatory import AsyncCircuitBreakerFactory
from purgatory.domain.model import OpenedState

from service.observability import metrics

# Gauge values of thinksearch_circuit_breaker_state.
STATE_VALUES = {"closed": 0.0, "half-opened": 0.5, "opened": 1.0}


class CircuitOpen(Exception):
    """The dependency's breaker is open: it was failing moments ago and is not being called."""

    def __init__(self, dependency: str) -> None:
        super().__init__(f"circuit breaker open for {dependency}: failing recently, not called")
        self.dependency = dependency


Ignore = Callable[[BaseException], bool]


class Breakers:
    def __init__(self, *, threshold: int, reset_s: float) -> None:
        self._factory = AsyncCircuitBreakerFactory(default_threshold=threshold, default_ttl=reset_s)
        self._factory.add_listener(self._on_event)
        self._states: dict[str, str] = {}

    def _on_event(self, name: str, event_type: str, event: Any) -> None:
        if event_type == "state_changed":
            self._states[name] = event.state
            metrics.BREAKER_STATE.labels(name).set(STATE_VALUES.get(event.state, 0.0))
        elif event_type == "circuit_breaker_created":
            self._states.setdefault(name, "closed")
            metrics.BREAKER_STATE.labels(name).set(0.0)

    def state(self, name: str) -> str:
        """`closed`, `opened` or `half-opened` (`closed` for a dependency never called)."""
        return self._states.get(name, "closed")

    def states(self) -> dict[str, str]:
        return dict(self._states)

    @asynccontextmanager
    async def guard(
        self, name: str, *, failures: tuple[type[BaseException], ...], ignore: Ignore | None = None
    ) -> AsyncIterator[None]:
        """Runs the block as a call to `name`: exceptions of `failures` types count against it (unless `ignore`
        says the dependency is not to blame); any other exception passes through uncounted."""
        exclude: list[Any] = [
            (BaseException, lambda exc: not isinstance(exc, failures) or bool(ignore and ignore(exc)))
        ]
        breaker = await self._factory.get_breaker(name, exclude=exclude)
        try:
            async with breaker:
                yield
        except OpenedState as exc:
            metrics.BREAKER_REJECTIONS.labels(name).inc()
            raise CircuitOpen(name) from exc
