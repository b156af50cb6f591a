"""Jobs: long work (a bulk upload, a warming run) that clients follow by id, on any replica."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

JobStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]
JOB_STATUSES: tuple[JobStatus, ...] = ("queued", "running", "succeeded", "failed", "cancelled")
ACTIVE = frozenset({"queued", "running"})
TERMINAL = frozenset({"succeeded", "failed", "cancelled"})


@dataclass
class Job:
    job_id: str
    collection: str
    status: str = "queued"
    total: int = 0
    accepted: int = 0
    processed: int = 0
    failed: int = 0  # lines rejected when the upload was read
    write_failed: int = 0  # accepted lines that could not be written (the document's fault, or dead-lettered)
    truncated: int = 0
    sealed: bool = False  # the upload is complete: `accepted` is final
    errors: list[dict] = field(default_factory=list)
    write_errors: list[dict] = field(default_factory=list)  # the first of the write failures, as `errors`
    error: str | None = None
    created_at: float = field(default_factory=time.time)
    updated_at: float = field(default_factory=time.time)
    started_at: float | None = None
    finished_at: float | None = None
    kind: str = "ingest"  # or "warm" (search/warming.py), "tune" (search/tune_jobs.py): no queue entries
    progress: dict[str, Any] = field(default_factory=dict)  # a warm or tune job's counts (and a tune job's table)

    @property
    def done(self) -> bool:
        """Every accepted line is written or written off, and the upload is complete."""
        return self.sealed and self.processed + self.write_failed >= self.accepted

    def documents_per_second(self) -> float | None:
        if self.started_at is None or self.processed == 0:
            return None
        end = self.finished_at or self.updated_at
        return self.processed / max(end - self.started_at, 1e-3)


def iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")
