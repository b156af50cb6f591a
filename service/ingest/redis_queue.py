"""Redis Streams queue and Redis job records: durable, shared by every gateway replica and worker process.

- Documents go to one stream (`XADD`, pipelined in a MULTI with the job's `accepted` count) before the 202.
- Workers read through one consumer group (`XREADGROUP`), and acknowledge and delete an entry (`XACK` + `XDEL`)
  only after the store confirmed the write. A Lua script does the acknowledgement and the job's count together,
  and counts only entries `XACK` really acknowledged, so a redelivered entry is never counted twice.
- Entries left pending by a dead worker are taken over after `claim_idle_s` (`XAUTOCLAIM`); its name is removed
  from the group once it holds nothing and has been idle for ten claim times (at least ten minutes).
- Job state is a hash per job, with a sorted set per collection for listings; records expire after `job_ttl_s`.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any

import redis.asyncio as redis

from service.ingest.queue import Entry, LineFailure, QueueStats
from service.ingest.redis_scripts import COMPLETE, FAIL_LINES, FORGET_IDLE, SEAL, TRANSITION
from service.jobs.model import Job
from service.model.errors import JobNotFound, QueueFull, QueueUnavailable
from service.observability import metrics

log = logging.getLogger(__name__)

PREFIX = "thinksearch:ingest:"
STREAM = PREFIX + "stream"
# Entries that kept coming back unacknowledged (they kill workers), with why: kept for an operator to look at.
DEAD_LETTERS = PREFIX + "dead"
DEAD_LETTERS_MAX = 10_000
GROUP = "thinksearch-ingest"


def _document_id(raw: str) -> str | None:
    try:
        value = json.loads(raw).get("id")
    except (ValueError, AttributeError, RecursionError):
        return None
    return value[:512] if isinstance(value, str) else None


def _job_key(job_id: str) -> str:
    return f"{PREFIX}job:{job_id}"


def _index_key(collection: str | None) -> str:
    return f"{PREFIX}jobs" if collection is None else f"{PREFIX}jobs:{collection}"


def _float(value: str | None) -> float | None:
    return float(value) if value else None


def _job(job_id: str, h: dict[str, str]) -> Job:
    return Job(
        job_id=job_id,
        collection=h["collection"],
        status=h["status"],
        total=int(h.get("total", 0)),
        accepted=int(h.get("accepted", 0)),
        processed=int(h.get("processed", 0)),
        failed=int(h.get("failed", 0)),
        write_failed=int(h.get("write_failed", 0)),
        write_errors=json.loads(h.get("write_errors") or "[]"),
        truncated=int(h.get("truncated", 0)),
        sealed=h.get("sealed") == "1",
        errors=json.loads(h.get("errors") or "[]"),
        error=h.get("error") or None,
        created_at=float(h["created_at"]),
        updated_at=float(h["updated_at"]),
        started_at=_float(h.get("started_at")),
        finished_at=_float(h.get("finished_at")),
        kind=h.get("kind", "ingest"),
        progress=json.loads(h.get("progress") or "{}"),
    )


@asynccontextmanager
async def _unavailable_on_error() -> AsyncIterator[None]:
    try:
        yield
    except (redis.RedisError, OSError) as exc:
        raise QueueUnavailable(f"Redis: {exc!r}") from exc


class RedisBroker:
    name = "redis-streams"
    durable = True

    def __init__(
        self,
        client: redis.Redis,
        *,
        queue_max: int,
        claim_idle_s: float,
        max_errors: int,
        job_ttl_s: int,
        forget_after_s: float | None = None,
        max_deliveries: int = 5,
    ) -> None:
        # Decoded replies, and a socket timeout longer than a read blocks on the server (RedisPools.streams).
        self._redis = client
        self._queue_max = queue_max
        self._claim_idle_ms = int(claim_idle_s * 1000)
        self._max_errors = max_errors
        self._job_ttl_s = job_ttl_s
        self._complete = self._redis.register_script(COMPLETE)
        self._seal = self._redis.register_script(SEAL)
        self._transition = self._redis.register_script(TRANSITION)
        self._forget_idle = self._redis.register_script(FORGET_IDLE)
        self._fail_lines = self._redis.register_script(FAIL_LINES)
        self._max_deliveries = max_deliveries
        # A dead worker's name stays in the group after its entries are claimed: forget names idle this long.
        self._forget_after_ms = int(forget_after_s * 1000) if forget_after_s else max(10 * self._claim_idle_ms, 600_000)
        self._group_ready = False
        self._claim_cursor = "0-0"
        self._next_claim = 0.0
        self._next_forget = 0.0

    async def _ensure_group(self) -> None:
        if self._group_ready:
            return
        try:
            await self._redis.xgroup_create(STREAM, GROUP, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._group_ready = True

    async def create_job(self, collection: str, kind: str = "ingest") -> Job:
        async with _unavailable_on_error():
            await self._ensure_group()
            if kind == "ingest" and await self._redis.xlen(STREAM) >= self._queue_max:
                raise QueueFull
            job = Job(job_id=uuid.uuid4().hex, collection=collection, kind=kind)
            fields = {
                "kind": kind,
                "collection": collection,
                "status": job.status,
                "created_at": job.created_at,
                "updated_at": job.updated_at,
                **{k: 0 for k in ("total", "accepted", "processed", "failed", "write_failed", "truncated", "sealed")},
            }
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.hset(_job_key(job.job_id), mapping=fields)
                pipe.expire(_job_key(job.job_id), self._job_ttl_s)
                pipe.zadd(_index_key(collection), {job.job_id: job.created_at})
                pipe.zadd(_index_key(None), {job.job_id: job.created_at})
                await pipe.execute()
        return job

    async def enqueue(self, job_id: str, collection: str, items: list[tuple[int, str]]) -> None:
        async with _unavailable_on_error(), self._redis.pipeline(transaction=True) as pipe:
            for line, doc in items:
                pipe.xadd(STREAM, {"job": job_id, "collection": collection, "line": line, "doc": doc})
            pipe.hincrby(_job_key(job_id), "accepted", len(items))
            pipe.hset(_job_key(job_id), "updated_at", time.time())
            await pipe.execute()

    async def seal(self, job_id: str, *, total: int, rejected: int, errors: list[dict]) -> None:
        errors_json = json.dumps(errors[: self._max_errors])
        async with _unavailable_on_error():
            await self._seal(keys=[_job_key(job_id)], args=[time.time(), total, rejected, errors_json])
            await self._redis.expire(_job_key(job_id), self._job_ttl_s)

    async def _move(self, job_id: str, from_: str, to: str, stamp: str, error: str = "") -> None:
        async with _unavailable_on_error():
            found = await self._transition(keys=[_job_key(job_id)], args=[from_, to, time.time(), stamp, error])
        if not found:
            raise JobNotFound(job_id)

    async def record(self, job_id: str, progress: dict[str, Any], status: str | None = None) -> Job:
        async with _unavailable_on_error():
            fields = {"progress": json.dumps(progress), "updated_at": time.time()}
            await self._redis.hset(_job_key(job_id), mapping=fields)
        if status is not None:
            stamp = "started_at" if status == "running" else "finished_at"
            await self._move(job_id, "queued,running", status, stamp)
        return await self.get(job_id)

    async def fail(self, job_id: str, reason: str) -> None:
        await self._move(job_id, "queued,running", "failed", "finished_at", reason)

    async def cancel(self, job_id: str) -> Job:
        await self._move(job_id, "queued,running", "cancelled", "finished_at")
        return await self.get(job_id)

    async def get(self, job_id: str) -> Job:
        async with _unavailable_on_error():
            h = await self._redis.hgetall(_job_key(job_id))
        if not h:
            raise JobNotFound(job_id)
        return _job(job_id, h)

    async def list(self, collection: str | None, limit: int) -> list[Job]:
        index = _index_key(collection)
        async with _unavailable_on_error():
            ids = await self._redis.zrevrange(index, 0, limit - 1)
            async with self._redis.pipeline(transaction=False) as pipe:
                for job_id in ids:
                    pipe.hgetall(_job_key(job_id))
                hashes = await pipe.execute()
            expired = [job_id for job_id, h in zip(ids, hashes, strict=True) if not h]
            if expired:  # records past their TTL: drop them from the index too
                await self._redis.zrem(index, *expired)
        return [_job(job_id, h) for job_id, h in zip(ids, hashes, strict=True) if h]

    async def read(self, consumer: str, count: int, block_s: float) -> list[Entry]:
        try:
            return await self._read(consumer, count, block_s)
        except QueueUnavailable as exc:
            if "NOGROUP" in str(exc.__cause__ or exc):
                # Redis lost the stream (restarted without persistence): make the group again on the next read.
                self._group_ready = False
            raise

    async def _read(self, consumer: str, count: int, block_s: float) -> list[Entry]:
        async with _unavailable_on_error():
            await self._ensure_group()
            raw: list[tuple[str, dict[str, str]]] = []
            claimed = False
            if time.monotonic() >= self._next_claim:
                raw = await self._claim(consumer, count)
                claimed = bool(raw)
            if not raw:
                reply = await self._redis.xreadgroup(
                    GROUP, consumer, {STREAM: ">"}, count=count, block=max(1, int(block_s * 1000))
                )
                raw = reply[0][1] if reply else []
            entries = [Entry(entry_id, f["job"], f["collection"], int(f["line"]), f["doc"]) for entry_id, f in raw if f]
            if claimed:  # delivered before: it may be an entry that kills its workers
                entries = await self._without_dead(entries)
            await self._mark_running({e.job_id for e in entries})
        return entries

    async def _without_dead(self, entries: list[Entry]) -> list[Entry]:
        """Entries delivered more than `max_deliveries` times (claimed again and again: they kill the workers that
        take them) go to the dead-letter stream, as failed lines of their jobs, instead of to another worker."""
        if not entries:
            return entries
        async with self._redis.pipeline(transaction=False) as pipe:
            for e in entries:
                pipe.xpending_range(STREAM, GROUP, min=e.entry_id, max=e.entry_id, count=1)
            replies = await pipe.execute()
        counted = [
            replace(e, deliveries=int(r[0]["times_delivered"]) if r else 1)
            for e, r in zip(entries, replies, strict=True)
        ]
        dead = [e for e in counted if e.deliveries > self._max_deliveries]
        if dead:
            await self.dead_letter(dead, f"delivered {self._max_deliveries}+ times without being written")
        return [e for e in counted if e.deliveries <= self._max_deliveries]

    async def dead_letter(self, entries: list[Entry], reason: str) -> None:
        async with self._redis.pipeline(transaction=False) as pipe:
            for e in entries:
                fields = {"job": e.job_id, "collection": e.collection, "line": e.line, "doc": e.document[:65536]}
                pipe.xadd(DEAD_LETTERS, {**fields, "reason": reason}, maxlen=DEAD_LETTERS_MAX, approximate=True)
            await pipe.execute()
        log.error("%d ingestion entries dead-lettered: %s", len(entries), reason)
        metrics.INGEST_DOCUMENTS.labels("dead_lettered").inc(len(entries))
        await self.fail_lines([LineFailure(e, _document_id(e.document), f"dead-lettered: {reason}") for e in entries])

    async def fail_lines(self, failures: list[LineFailure]) -> None:
        by_job: dict[str, list[LineFailure]] = defaultdict(list)
        for f in failures:
            by_job[f.entry.job_id].append(f)
        async with _unavailable_on_error():
            for job_id, group in by_job.items():
                errors = json.dumps([{"line": f.entry.line, "id": f.document_id, "error": f.reason} for f in group])
                args = [GROUP, time.time(), self._max_errors, errors, *(f.entry.entry_id for f in group)]
                await self._fail_lines(keys=[STREAM, _job_key(job_id)], args=args)

    async def queued(self) -> int:
        async with _unavailable_on_error():
            return int(await self._redis.xlen(STREAM))

    async def _claim(self, consumer: str, count: int) -> list[tuple[str, dict[str, str]]]:
        """Entries idle past the claim time (their worker died), scanned through the pending list in turns."""
        cursor, claimed, *_ = await self._redis.xautoclaim(
            STREAM, GROUP, consumer, min_idle_time=self._claim_idle_ms, start_id=self._claim_cursor, count=count
        )
        self._claim_cursor = cursor
        if cursor == "0-0":  # scanned the whole pending list: look again after a fraction of the idle time
            now = time.monotonic()
            self._next_claim = now + min(self._claim_idle_ms / 4000, 5.0)
            if now >= self._next_forget:  # names age for minutes: no need to list them on every scan
                self._next_forget = now + self._forget_after_ms / 4000
                await self.forget_dead_consumers()
        return claimed

    async def forget_dead_consumers(self) -> int:
        """Remove consumers idle past the limit that hold no entry (workers that died and were claimed from)."""
        consumers = await self._redis.xinfo_consumers(STREAM, GROUP)
        idle = [c["name"] for c in consumers if c["idle"] >= self._forget_after_ms and c["pending"] == 0]
        if not idle:
            return 0
        forgotten = int(await self._forget_idle(keys=[STREAM], args=[GROUP, *idle]))
        log.info("forgot %d idle ingestion consumers", forgotten)
        return forgotten

    async def _mark_running(self, job_ids: set[str]) -> None:
        for job_id in job_ids:
            await self._transition(keys=[_job_key(job_id)], args=["queued", "running", time.time(), "started_at", ""])

    async def complete(self, entries: list[Entry], truncated: dict[str, int]) -> None:
        by_job: dict[str, list[str]] = defaultdict(list)
        for e in entries:
            by_job[e.job_id].append(e.entry_id)
        async with _unavailable_on_error():
            for job_id, ids in by_job.items():
                args = [GROUP, time.time(), truncated.get(job_id, 0), *ids]
                await self._complete(keys=[STREAM, _job_key(job_id)], args=args)

    async def drop(self, entries: list[Entry]) -> None:
        if not entries:
            return
        ids = [e.entry_id for e in entries]
        async with _unavailable_on_error(), self._redis.pipeline(transaction=True) as pipe:
            pipe.xack(STREAM, GROUP, *ids)
            pipe.xdel(STREAM, *ids)
            await pipe.execute()

    async def stats(self) -> QueueStats:
        async with _unavailable_on_error():
            await self._ensure_group()
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.xlen(STREAM)
                pipe.xrange(STREAM, count=1)
                pipe.xinfo_groups(STREAM)
                length, first, groups = await pipe.execute()
        oldest = time.time() - int(first[0][0].split("-")[0]) / 1000 if first else 0.0
        lag = next((g.get("lag") or 0 for g in groups if g["name"] == GROUP), length)
        return QueueStats(length=length, oldest_pending_s=max(oldest, 0.0), lag=int(lag))

    async def ping(self) -> None:
        async with _unavailable_on_error():
            await self._redis.ping()

    async def aclose(self) -> None:
        await self._redis.aclose()  # closes a pool only the client owns; a shared one is closed by its owner
