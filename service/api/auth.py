"""API keys with scopes, and per-caller rate limits. No keys configured = open (development), which the startup
log says; an open service still rate-limits per client address when RATE_LIMITS is set.

Keys are held as SHA-256 digests (the configuration may give the digest instead of the key), compared in constant
time, and never logged: logs and rate-limit buckets name a key by its `name` or a prefix of its digest.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass, field

from fastapi import Depends, Request

from service.api.problems import Problem
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

    def may(self, scope: Scope) -> bool:
        return scope in self.scopes or "admin" in self.scopes


def key_digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


class KeyRing:
    """The configured keys, by digest. Built once per app from the settings."""

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
            )
            self._entries.append((digest, principal))

    @property
    def open(self) -> bool:
        return not self._entries

    def authenticate(self, token: str | None) -> Principal | None:
        if token is None:
            return None
        digest = key_digest(token)
        found = None
        for known, principal in self._entries:  # every entry is compared: the time taken says nothing
            if hmac.compare_digest(known, digest):
                found = principal
        return found


def bearer_token(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def caller(request: Request) -> Principal | None:
    """The authenticated caller; with no keys configured, the client address with every scope."""
    keys: KeyRing = request.app.state.keys
    if keys.open:
        address = request.client.host if request.client else "unknown"
        return Principal(id=f"addr:{address}", scopes=ALL_SCOPES)
    return keys.authenticate(bearer_token(request))


def require(scope: Scope):
    """Dependency: the caller's key must carry `scope` (or `admin`, which implies every scope), within its rate."""

    async def check(request: Request) -> None:
        principal = caller(request)
        if principal is None:
            raise Problem(401, "Missing or invalid API key.", headers={"WWW-Authenticate": "Bearer"})
        annotate_request(key_id=principal.id)
        if not principal.may(scope):
            raise Problem(403, f"This key lacks the '{scope}' scope.")
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
        raise Problem(
            429,
            f"Rate limit of the '{scope}' scope exceeded ({limit.rate:g}/s, burst {limit.burst}); retry in {retry} s.",
            headers={**headers, "Retry-After": str(retry)},
        )
    add_response_headers(headers)


async def require_json(request: Request) -> None:  # async: no thread-pool hop per request
    """415 for a body that is not JSON, instead of a confusing validation error."""
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type != "application/json" and not media_type.endswith("+json"):
        raise Problem(415, "Send the body as application/json.")
