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


# A 422 lists at most this many fields (a body of 1,000 bad documents is not answered with 1,000 entries).
MAX_ERRORS = 50


def clean_text(text: str, limit: int = 500) -> str:
    """Text that echoes the client (an unknown field's name) made safe to serve: cut short, and what UTF-8 cannot
    encode (a lone surrogate, which JSON can carry as \\ud800) written as an escape instead of failing the response."""
    text = text if len(text) <= limit else text[:limit] + "..."
    return text.encode("utf-8", "backslashreplace").decode()


def field_error(field: str, message: str) -> Problem:
    return Problem(422, f"{field}: {message}", errors=[{"field": field, "message": message}])


def problem_response(
    status: int,
    detail: str,
    *,
    title: str | None = None,
    headers: dict[str, str] | None = None,
    errors: list[dict[str, Any]] | None = None,
    extensions: dict[str, Any] | None = None,
) -> JSONResponse:
    """`extensions`: members of the problem type beyond RFC 9457's own (e.g. the `job_id` of a cut upload)."""
    body: dict[str, Any] = {
        **(extensions or {}),
        "type": "about:blank",
        "title": title or HTTPStatus(status).phrase,
        "status": status,
        "detail": clean_text(detail, 2000),
    }
    if errors:
        body["errors"] = [
            {**e, "field": clean_text(str(e.get("field", "")), 200), "message": clean_text(str(e.get("message", "")))}
            for e in errors[:MAX_ERRORS]
        ]
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
    detail = "; ".join(f"{clean_text(f['field'], 200)}: {f['message']}" for f in fields[:5])
    return problem_response(422, detail, errors=fields)


async def _on_http(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    detail = str(exc.detail)
    if exc.status_code == 400 and isinstance(exc.__cause__, RecursionError):
        # FastAPI's json.loads gave up on arrays or objects nested past Python's recursion limit.
        detail = "The request body is not valid JSON: nested too deeply."
    return problem_response(exc.status_code, detail, headers=dict(exc.headers or {}))


def install_problem_handlers(app: FastAPI) -> None:
    app.add_exception_handler(Problem, _on_problem)
    app.add_exception_handler(RequestValidationError, _on_validation)
    app.add_exception_handler(StarletteHTTPException, _on_http)
