"""The one way this service builds an HTTP client for an OpenAI-compatible dependency."""

from __future__ import annotations

import httpx

CONNECT_TIMEOUT_S = 5.0


def openai_compatible_client(
    base_url: str, *, api_key: str | None, timeout_s: float, max_connections: int
) -> httpx.AsyncClient:
    """Explicit timeouts (a short connect: a dead host fails fast) and a bounded connection pool."""
    return httpx.AsyncClient(
        base_url=base_url.rstrip("/") + "/",
        headers={"Authorization": f"Bearer {api_key}"} if api_key else {},
        timeout=httpx.Timeout(timeout_s, connect=min(CONNECT_TIMEOUT_S, timeout_s)),
        limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
    )
