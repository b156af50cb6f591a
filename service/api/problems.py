"""RFC 9457 problem+json errors: one exception type for the service's own errors, handlers for the framework's."""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.observability.context import current_request_id

PROBLEM_MEDIA_TYPE = "application/problem+json"
# What a 503 tells clients to wait before trying again (dependencies usually come back within seconds).
RETRY_AFTER_S = 5


class Problem(Exception):
    """An error the client can act on; rendered as problem+json with `status`."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        title: str | None = None,
        headers: dict[str, str] | None = None,
        errors: list[dict[str, Any]] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.title = title or HTTPStatus(status).phrase
        self.headers = headers or {}
        self.errors = errors


def field_error(field: str, message: str) -> Problem:
    return Problem(422, f"{field}: {message}", errors=[{"field": field, "message": message}])


def problem_response(
    status: int,
    detail: str,
    *,
    title: str | None = None,
    headers: dict[str, str] | None = None,
    errors: list[dict[str, Any]] | None = None,
) -> JSONResponse:
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": title or HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
    }
    if errors:
        body["errors"] = errors
    request_id = current_request_id()
    if request_id:
        body["request_id"] = request_id
    return JSONResponse(body, status_code=status, headers=headers, media_type=PROBLEM_MEDIA_TYPE)


def _field_name(loc: tuple[Any, ...]) -> str:
    """("body", "documents", 3, "text") -> "documents[3].text"."""
    parts = loc[1:] if loc and loc[0] in ("body", "query", "path", "header") else loc
    name = ""
    for part in parts:
        name += f"[{part}]" if isinstance(part, int) else (f".{part}" if name else str(part))
    return name or "body"


async def _on_problem(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, Problem)
    return problem_response(exc.status, exc.detail, title=exc.title, headers=exc.headers, errors=exc.errors)


async def _on_validation(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    if any(e.get("type") == "json_invalid" for e in errors):
        return problem_response(400, "The request body is not valid JSON.")
    fields = [{"field": _field_name(tuple(e.get("loc", ()))), "message": e.get("msg", "invalid")} for e in errors]
    detail = "; ".join(f"{f['field']}: {f['message']}" for f in fields[:5])
    return problem_response(422, detail, errors=fields)


async def _on_http(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    return problem_response(exc.status_code, str(exc.detail), headers=dict(exc.headers or {}))


def install_problem_handlers(app: FastAPI) -> None:
    app.add_exception_handler(Problem, _on_problem)
    app.add_exception_handler(RequestValidationError, _on_validation)
    app.add_exception_handler(StarletteHTTPException, _on_http)
