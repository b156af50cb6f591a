"""What an API key grants: scopes, the collections it may reach, until when. Shared by the keys of `API_KEYS` and
those created at run time (`POST /v1/keys`, kept in Redis)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


def reaches(patterns: tuple[str, ...] | None, collection: str) -> bool:
    """None: every collection. Else an exact name, or a pattern ending in `*` that the name starts with."""
    if patterns is None:
        return True
    return any(collection.startswith(p[:-1]) if p.endswith("*") else collection == p for p in patterns)


@dataclass(frozen=True)
class KeyGrant:
    """One key, by the SHA-256 digest of its secret (never the secret)."""

    id: str  # names the key in logs, rate-limit buckets and DELETE /v1/keys/{id}
    name: str
    digest: str  # hex
    scopes: tuple[str, ...]
    collections: tuple[str, ...] | None = None  # None: all
    expires_at: float | None = None  # epoch seconds; None: never
    rate_limits: Mapping[str, Mapping[str, float]] = field(default_factory=dict)  # scope -> {rate, burst}
    created_at: float = field(default_factory=time.time)

    def expired(self, now: float | None = None) -> bool:
        return self.expires_at is not None and (time.time() if now is None else now) >= self.expires_at

    def as_record(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "digest": self.digest,
            "scopes": list(self.scopes),
            "collections": None if self.collections is None else list(self.collections),
            "expires_at": self.expires_at,
            "rate_limits": {k: dict(v) for k, v in self.rate_limits.items()},
            "created_at": self.created_at,
        }

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> KeyGrant:
        collections = record.get("collections")
        return cls(
            id=str(record["id"]),
            name=str(record["name"]),
            digest=str(record["digest"]),
            scopes=tuple(record["scopes"]),
            collections=None if collections is None else tuple(collections),
            expires_at=record.get("expires_at"),
            rate_limits=record.get("rate_limits") or {},
            created_at=float(record.get("created_at") or 0.0),
        )
