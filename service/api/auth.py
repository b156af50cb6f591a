"""API keys with scopes, and per-caller rate limits. No keys configured = open (development), which the startup
log says; an open service still rate-limits per client address when RATE_LIMITS is set.

Keys are held as SHA-256 digests (the configuration may give the digest instead of the key), compared in constant
time, and never logged: logs and rate-limit buckets name a key by its `name` or a prefix of its digest.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from fastapi import Depends, Request

from service.access.keys import RuntimeKeys
from service.api.problems import Problem
from service.api.protocol import is_collection_name
from service.model.keys import KeyGrant, reaches
from service.observability import metrics
from service.observability.context import add_response_headers, annotate_request
from service.redis.ratelimit import Bucket
from service.settings import KeySpec, RateLimit, Scope, Settings

HASH_PREFIX = "sha256:"
ALL_SCOPES = frozenset({"search", "ingest", "admin"})


@dataclass(frozen=True)
class Principal:
    """Who is calling: `id` names them in logs and rate-limit buckets (never the key itself)."""

    id: str
    scopes: frozenset[str]
    rate_limits: Mapping[str, RateLimit] = field(default_factory=dict)
    collections: tuple[str, ...] | None = None  # None: every collection
    expires_at: float | None = None
    key_id: str | None = None  # a runtime key's id (its last use is recorded)

    def may(self, scope: Scope) -> bool:
        return scope in self.scopes or "admin" in self.scopes

    def reaches(self, collection: str) -> bool:
        return reaches(self.collections, collection)

    @property
    def unrestricted(self) -> bool:
        return self.collections is None


def key_digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def principal_of(grant: KeyGrant) -> Principal:
    """A runtime key as a caller: named by its name and id (names need not be unique)."""
    return Principal(
        id=f"{grant.name}#{grant.id}",
        scopes=frozenset(grant.scopes),
        rate_limits={k: RateLimit(**v) for k, v in grant.rate_limits.items()},
        collections=grant.collections,
        expires_at=grant.expires_at,
        key_id=grant.id,
    )


class KeyRing:
    """The configured keys (API_KEYS), by digest, built once per app from the settings; runtime keys beside them."""

    def __init__(self, api_keys: Mapping[str, list[Scope] | KeySpec]) -> None:
        self._entries: list[tuple[bytes, Principal]] = []
        for number, (configured, grant) in enumerate(api_keys.items(), start=1):
            spec = grant if isinstance(grant, KeySpec) else KeySpec(scopes=grant)
            if configured.startswith(HASH_PREFIX):
                try:
                    digest = bytes.fromhex(configured[len(HASH_PREFIX) :])
                except ValueError:
                    digest = b""
                if len(digest) != 32:
                    # Never echo the entry: it may be a mistyped raw key.
                    raise ValueError(f"API_KEYS entry {number}: '{HASH_PREFIX}' must be followed by 64 hex digits")
            else:
                digest = key_digest(configured)
            principal = Principal(
                id=spec.name or f"key:{digest.hex()[:12]}",
                scopes=frozenset(spec.scopes),
                rate_limits=dict(spec.rate_limits),
                collections=None if spec.collections is None else tuple(spec.collections),
                expires_at=None if spec.expires_at is None else spec.expires_at.timestamp(),
            )
            self._entries.append((digest, principal))

    @property
    def open(self) -> bool:
        """No API_KEYS: every caller may do everything (development). Runtime keys need a bootstrap admin key."""
        return not self._entries

    def authenticate(self, token: str | None, runtime: RuntimeKeys | None = None) -> tuple[Principal | None, str]:
        """The caller, or None and why: `missing`, `invalid` (unknown key) or `expired`."""
        if token is None:
            return None, "missing"
        digest = key_digest(token)
        found = None
        for known, principal in self._entries:  # every entry is compared: the time taken says nothing
            if hmac.compare_digest(known, digest):
                found = principal
        if found is None and runtime is not None:
            # A dict lookup by the digest: its timing depends on the digest of what the caller sent, not on a secret.
            grant = runtime.find(digest.hex())
            found = principal_of(grant) if grant is not None else None
        if found is None:
            return None, "invalid"
        if found.expires_at is not None and time.time() >= found.expires_at:
            return None, "expired"
        if found.key_id is not None and runtime is not None:
            runtime.used(found.key_id)
        return found, "ok"


def bearer_token(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def _runtime(request: Request) -> RuntimeKeys | None:
    services = getattr(request.app.state, "services", None)
    return getattr(services, "runtime_keys", None)


def authenticate(request: Request) -> tuple[Principal | None, str]:
    """The caller and `ok`, or None and why not; with no keys configured, the client address with every scope."""
    keys: KeyRing = request.app.state.keys
    if keys.open:
        address = request.client.host if request.client else "unknown"
        return Principal(id=f"addr:{address}", scopes=ALL_SCOPES), "ok"
    return keys.authenticate(bearer_token(request), _runtime(request))


def caller(request: Request) -> Principal | None:
    return authenticate(request)[0]


async def _resolve(request: Request, name: str) -> str:
    aliases = getattr(getattr(request.app.state, "services", None), "aliases", None)
    if aliases is None or not is_collection_name(name):
        return name
    return await aliases.resolve(name)


def refuse(status: int, reason: str, detail: str, principal: Principal | None = None, **extra: Any) -> Problem:
    """A refused request: counted by reason, and an audit line at its end (service/api/middleware.py)."""
    metrics.REFUSED.labels(reason).inc()
    annotate_request(audit="refused", refusal=reason, **({"key_id": principal.id} if principal else {}))
    return Problem(status, detail, **extra)


def require(scope: Scope):
    """Dependency: the caller's key must carry `scope` (or `admin`, which implies every scope), reach the collection
    the path names (if any), and be within its rate."""

    async def check(request: Request) -> None:
        principal, why = authenticate(request)
        if principal is None:
            detail = "The API key has expired." if why == "expired" else "Missing or invalid API key."
            raise refuse(401, why, detail, headers={"WWW-Authenticate": "Bearer"})
        request.state.principal = principal
        annotate_request(key_id=principal.id)
        if not principal.may(scope):
            raise refuse(403, "scope", f"This key lacks the '{scope}' scope.", principal)
        name = request.path_params.get("name")
        if name is not None:
            # Aliases resolve first: a key's grant is on collections, and the route works on the real one.
            name = request.state.collection = await _resolve(request, name)
            # Before anything looks the collection up: the answer is the same whether or not it exists.
            if not principal.reaches(name):
                raise refuse(403, "collection", "This key may not reach this collection.", principal)
        if scope == "admin":
            annotate_request(audit="admin")
        await _within_rate(request, principal, scope)

    check.required_scope = scope  # type: ignore[attr-defined]  # read by the auth-matrix test
    return Depends(check)


async def _within_rate(request: Request, principal: Principal, scope: Scope) -> None:
    settings: Settings = request.app.state.settings
    limit = principal.rate_limits.get(scope) or settings.rate_limits.get(scope)
    if limit is None:
        return
    bucket = Bucket(limit.rate, limit.burst)
    decision = await request.app.state.services.limiter.take(f"{principal.id}:{scope}", bucket)
    headers = {
        "RateLimit-Limit": str(bucket.burst),
        "RateLimit-Remaining": str(decision.remaining),
        "RateLimit-Reset": str(decision.reset_s),
        "RateLimit-Policy": bucket.policy(),
    }
    if not decision.allowed:
        metrics.RATE_LIMITED.labels(scope).inc()
        retry = max(1, decision.retry_after_s)
        raise refuse(
            429,
            "rate_limited",
            f"Rate limit of the '{scope}' scope exceeded ({limit.rate:g}/s, burst {limit.burst}); retry in {retry} s.",
            principal,
            headers={**headers, "Retry-After": str(retry)},
        )
    add_response_headers(headers)


async def require_json(request: Request) -> None:  # async: no thread-pool hop per request
    """415 for a body that is not JSON, instead of a confusing validation error."""
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type != "application/json" and not media_type.endswith("+json"):
        raise Problem(415, "Send the body as application/json.")
