"""API keys with scopes. No keys configured = open (development), which the startup log says."""

from __future__ import annotations

import hmac

from fastapi import Depends, Request

from service.api.problems import Problem
from service.settings import Scope, Settings


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def scopes_of(settings: Settings, token: str | None) -> set[str] | None:
    """The key's scopes, or None for an unknown key. Constant-time comparison of keys."""
    if token is None:
        return None
    for key, scopes in settings.api_keys.items():
        if hmac.compare_digest(key.encode(), token.encode()):
            return set(scopes)
    return None


def require(scope: Scope):
    """Dependency: the caller's key must carry `scope` (or `admin`, which implies every scope)."""

    def check(request: Request) -> None:
        settings: Settings = request.app.state.settings
        if not settings.api_keys:
            return
        scopes = scopes_of(settings, _bearer(request))
        if scopes is None:
            raise Problem(401, "Missing or invalid API key.", headers={"WWW-Authenticate": "Bearer"})
        if scope not in scopes and "admin" not in scopes:
            raise Problem(403, f"This key lacks the '{scope}' scope.")

    return Depends(check)


def require_json(request: Request) -> None:
    """415 for a body that is not JSON, instead of a confusing validation error."""
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type != "application/json" and not media_type.endswith("+json"):
        raise Problem(415, "Send the body as application/json.")
