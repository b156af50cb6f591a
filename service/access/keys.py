"""The runtime key table as this replica sees it.

Every replica re-reads the whole table from Redis every REFRESH_S (one HGETALL), so a key created or revoked on
any replica is honoured or refused everywhere within that time, and a request costs no Redis round trip for its key.
While the table cannot be read for longer than STALE_AFTER_S, runtime keys are refused (fail closed: a revoked key
must not live on through a Redis outage); the keys of API_KEYS keep working.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import secrets
import time
import uuid
from collections.abc import Mapping

from redis.exceptions import RedisError

from service.model.errors import KeyStoreUnavailable, KeysUnavailable
from service.model.keys import KeyGrant
from service.redis.keys import KeyTable

log = logging.getLogger(__name__)
REFRESH_S = 0.25
STALE_AFTER_S = 5.0
# A key's last use is written at most this often per replica (a hot key must not write Redis per request).
TOUCH_EVERY_S = 10.0
SECRET_PREFIX = "tsk_"


def digest_of(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class RuntimeKeys:
    def __init__(self, table: KeyTable | None, why_not: str | None = None) -> None:
        self._table = table
        self._why_not = why_not or "keys are managed at run time only with Redis (REDIS_URL)"
        self._by_digest: dict[str, KeyGrant] = {}
        self._read_at = 0.0  # monotonic time of the last successful read
        self._touched: dict[str, float] = {}  # key id -> last use not yet written
        self._written: dict[str, float] = {}  # key id -> when its last use was last written
        self._task: asyncio.Task[None] | None = None

    @property
    def available(self) -> bool:
        return self._table is not None

    def start(self) -> None:
        if self._table is not None and self._task is None:
            self._task = asyncio.create_task(self._refresh_forever(), name="runtime-keys")

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def find(self, digest: str) -> KeyGrant | None:
        """The grant of a secret's digest (hex), if the table is fresh enough to trust."""
        if not self._by_digest or time.monotonic() - self._read_at > STALE_AFTER_S:
            return None
        return self._by_digest.get(digest)

    def used(self, key_id: str) -> None:
        self._touched[key_id] = time.time()

    async def create(
        self,
        name: str,
        scopes: tuple[str, ...],
        collections: tuple[str, ...] | None,
        expires_at: float | None,
        rate_limits: Mapping[str, Mapping[str, float]],
    ) -> tuple[KeyGrant, str]:
        """A new key and its secret (shown once: only its digest is kept)."""
        table = self._need_table()
        secret = SECRET_PREFIX + secrets.token_urlsafe(32)
        grant = KeyGrant(
            id=uuid.uuid4().hex[:16],
            name=name,
            digest=digest_of(secret),
            scopes=scopes,
            collections=collections,
            expires_at=expires_at,
            rate_limits=rate_limits,
        )
        await self._call(table.add(grant))
        await self.refresh()
        return grant, secret

    async def list(self) -> list[tuple[KeyGrant, float | None]]:
        table = self._need_table()
        grants = await self._call(table.grants())
        used = await self._call(table.last_used())
        used.update(self._touched)  # this replica's uses not written yet
        return [(g, used.get(g.id)) for g in sorted(grants, key=lambda g: (g.created_at, g.id))]

    async def revoke(self, key_id: str) -> bool:
        table = self._need_table()
        removed = await self._call(table.remove(key_id))
        await self.refresh()
        return removed

    async def refresh(self) -> None:
        """Reads the table now (and writes the last-use times due); a failure keeps the last table until stale."""
        if self._table is None:
            return
        try:
            grants = await self._table.grants()
            self._by_digest = {g.digest: g for g in grants}
            self._read_at = time.monotonic()
            await self._write_uses()
        except RedisError as exc:
            log.warning("runtime keys: cannot read the key table (%s)", exc)

    async def _write_uses(self) -> None:
        assert self._table is not None
        now = time.monotonic()
        due = {k: at for k, at in self._touched.items() if now - self._written.get(k, 0.0) >= TOUCH_EVERY_S}
        if due:
            await self._table.touch(due)
            for k in due:
                self._touched.pop(k, None)
                self._written[k] = now

    async def _refresh_forever(self) -> None:
        while True:
            await self.refresh()
            await asyncio.sleep(REFRESH_S)

    def _need_table(self) -> KeyTable:
        if self._table is None:
            raise KeysUnavailable(self._why_not)
        return self._table

    @staticmethod
    async def _call(work):  # noqa: ANN001, ANN205 - any awaitable of the key table
        try:
            return await work
        except RedisError as exc:
            raise KeyStoreUnavailable(f"the key table in Redis: {exc}") from None
