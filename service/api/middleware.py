"""Per-request plumbing as plain ASGI middleware (cheaper than BaseHTTPMiddleware on the hot path):
request ids in headers and logs, latency metrics by route template, and the request body limit."""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.observability import metrics
from service.observability.context import REQUEST_FIELDS, REQUEST_ID

_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:/+=-]{1,128}$")

log = logging.getLogger("thinksearch.access")


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return value.decode("latin-1")
    return None


class RequestContextMiddleware:
    """Sets X-Request-ID (the client's if sane, else a new one) and records latency by route and status."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = _header(scope, b"x-request-id")
        request_id = incoming if incoming and _VALID_REQUEST_ID.match(incoming) else uuid.uuid4().hex
        token = REQUEST_ID.set(request_id)
        fields: dict[str, Any] = {}
        fields_token = REQUEST_FIELDS.set(fields)
        started = time.perf_counter()
        status_sent: int | None = None

        async def send_with_id(message: Message) -> None:
            nonlocal status_sent
            if message["type"] == "http.response.start":
                status_sent = message["status"]
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"x-request-id"]
                headers.append((b"x-request-id", request_id.encode()))
                headers.extend((k.lower().encode(), v.encode()) for k, v in fields.get("_headers", {}).items())
                message["headers"] = headers
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            # Caught here, not by Starlette's outermost handler, so the 500 still carries the request id.
            log.exception("unhandled error")
            if status_sent is None:
                detail = "Internal error; see the server log for this request id."
                await send_problem(send_with_id, 500, "Internal Server Error", detail)
        finally:
            elapsed = time.perf_counter() - started
            route = scope.get("route")
            # The template, not the raw path: keeps label cardinality bounded.
            template = getattr(route, "path", None) or "unmatched"
            status = status_sent or 500
            metrics.REQUEST_SECONDS.labels(template, scope["method"], str(status)).observe(elapsed)
            access = {"method": scope["method"], "route": template, "status": status, "latency_ms": elapsed * 1000}
            log.info(
                "%s %s %s %.1fms",
                scope["method"],
                scope["path"],
                status,
                elapsed * 1000,
                extra={"fields": {**access, **{k: v for k, v in fields.items() if k != "_headers"}}},
            )
            REQUEST_FIELDS.reset(fields_token)
            REQUEST_ID.reset(token)


class BodyTooLarge(Exception):
    pass


class BodySizeLimitMiddleware:
    """413 for bodies over the limit, by Content-Length up front or by counting a streamed body."""

    def __init__(self, app: ASGIApp, max_bytes: int, exempt: str | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes
        # Paths whose bodies are streamed and never held whole (bulk NDJSON uploads).
        self.exempt = re.compile(exempt) if exempt else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or (self.exempt and self.exempt.match(scope["path"])):
            await self.app(scope, receive, send)
            return
        length = _header(scope, b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            await self._reject(send)
            return
        received = 0
        response_started = False

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal response_started
            response_started = response_started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except BodyTooLarge:
            if not response_started:
                await self._reject(send)

    async def _reject(self, send: Send) -> None:
        await send_problem(send, 413, "Content Too Large", f"The request body exceeds {self.max_bytes} bytes.")


async def send_problem(send: Send, status: int, title: str, detail: str) -> None:
    """A problem+json response sent at the ASGI level, for errors raised outside FastAPI's handlers."""
    body: dict[str, Any] = {"type": "about:blank", "title": title, "status": status, "detail": detail}
    if request_id := REQUEST_ID.get():
        body["request_id"] = request_id
    payload = json.dumps(body).encode()
    headers = [(b"content-type", b"application/problem+json"), (b"content-length", str(len(payload)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})
