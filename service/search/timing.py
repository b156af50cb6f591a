"""Stage timings of one search: each stage's milliseconds for the response, the stage histogram, and (when traces
are on) one span per stage, a child of the request's span."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from service.observability import metrics, tracing

STAGES = ("cache", "think", "embed", "search")
# One metric child per stage, looked up once: `labels()` per stage per search showed in the hot-path profile.
_STAGE_SECONDS = {name: metrics.STAGE_SECONDS.labels(name) for name in STAGES}


class StageTimer:
    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.ms: dict[str, float] = dict.fromkeys(STAGES, 0.0)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            with tracing.span(name):
                yield
        finally:
            elapsed = time.perf_counter() - t0
            self.ms[name] = round(self.ms[name] + elapsed * 1000, 3)
            _STAGE_SECONDS[name].observe(elapsed)

    def done(self) -> dict[str, float]:
        return {**self.ms, "total": round((time.perf_counter() - self.started) * 1000, 3)}
