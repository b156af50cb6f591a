"""The current request, as every layer may see it: its id (for logs and problem bodies), the fields its access-log
line will carry, and headers to add to its response. Set by the HTTP middleware; read and written from anywhere
below it without importing the HTTP layer."""

from __future__ import annotations

import contextvars
import logging
from typing import Any

REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)
# What the handlers learned about a request (mode, cache outcome, key id, ...), for its one access-log line.
REQUEST_FIELDS: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar("request_fields", default=None)


def current_request_id() -> str | None:
    return REQUEST_ID.get()


def add_response_headers(headers: dict[str, str]) -> None:
    """Headers for the current request's response, whatever kind of response the handler returns."""
    current = REQUEST_FIELDS.get()
    if current is not None:
        current.setdefault("_headers", {}).update(headers)


def annotate_request(**fields: Any) -> None:
    """Adds fields to the current request's access-log line (never document text, never a key)."""
    current = REQUEST_FIELDS.get()
    if current is not None:
        current.update(fields)


class RequestIdLogFilter(logging.Filter):
    """Puts the current request id on every log record (`%(request_id)s`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = REQUEST_ID.get() or "-"
        return True
