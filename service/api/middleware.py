"""Per-request plumbing as plain ASGI middleware (cheaper than BaseHTTPMiddleware on the hot path):
request ids in headers and logs, latency metrics by route template, the request body limit and the body read
timeout. Below ASGI, `guarded_http_protocol`: uvicorn's HTTP protocol with header limits and a header timeout."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
import uuid
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

from prometheus_client import Counter
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.observability import metrics
from service.observability.context import REQUEST_FIELDS, REQUEST_ID
from service.observability.logs import escape_controls
from service.observability.tracing import server_span

if TYPE_CHECKING:
    from service.settings import Settings

_VALID_REQUEST_ID = re.compile(r"[A-Za-z0-9._:/+=-]{1,128}")  # fullmatch: `$` would let a final "\n" through

log = logging.getLogger("thinksearch.access")
audit_log = logging.getLogger("thinksearch.audit")
conn_log = logging.getLogger("thinksearch.http")

# What a request's access fields add to its trace span (never the query text: LOG_QUERIES is for logs alone).
_SPAN_FIELDS = ("mode", "thought_cache", "degraded_reason", "stream", "key_id")

# Refused before a route saw the request (and 408s of slow bodies), by reason: header_timeout, header_too_large,
# too_many_headers, overloaded, body_timeout.
HTTP_REFUSALS = Counter(
    "thinksearch_http_refusals_total", "Requests and connections refused by the HTTP limits, by reason.", ["reason"]
)


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
        request_id = incoming if incoming and _VALID_REQUEST_ID.fullmatch(incoming) else uuid.uuid4().hex
        token = REQUEST_ID.set(request_id)
        fields: dict[str, Any] = {}
        fields_token = REQUEST_FIELDS.set(fields)
        started = time.perf_counter()
        status_sent: int | None = None
        # The request's trace span (None while traces are off), a child of the client's traceparent if it sent one.
        traced = server_span(scope["method"], scope["path"], scope.get("headers", ()))

        async def send_with_id(message: Message) -> None:
            nonlocal status_sent
            if message["type"] == "http.response.start":
                status_sent = message["status"]
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"x-request-id"]
                headers.append((b"x-request-id", request_id.encode()))
                headers.extend((k.lower().encode(), v.encode()) for k, v in fields.get("_headers", {}).items())
                message["headers"] = headers
            await send(message)

        timeout_s = _body_timeout_s(scope)
        body_read = False

        async def receive_in_time() -> Message:
            """Each body chunk within HTTP_BODY_TIMEOUT_S of asking for it, else 408 (and the connection closed).
            Once the body is complete, receive() waits untimed: it then only waits for a disconnect."""
            nonlocal body_read
            if body_read:
                return await receive()
            try:
                async with asyncio.timeout(timeout_s):
                    message = await receive()
            except TimeoutError:
                body_read = True
                HTTP_REFUSALS.labels("body_timeout").inc()
                raise HTTPException(
                    408, f"No part of the request body arrived for {timeout_s:g} s.", headers={"Connection": "close"}
                ) from None
            body_read = message["type"] != "http.request" or not message.get("more_body", False)
            return message

        try:
            await self.app(scope, receive_in_time if timeout_s else receive, send_with_id)
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
            if traced is not None:
                access["trace_id"] = traced.trace_id
            # Escaped: a path is decoded ("%0A" is a newline), and a line of the client's making must not pass for
            # another record. (JSON logs escape by themselves.)
            log.info(
                "%s %s %s %.1fms" + (" trace_id=%s" if traced is not None else ""),
                escape_controls(scope["method"]),
                escape_controls(scope["path"]),
                status,
                elapsed * 1000,
                *((traced.trace_id,) if traced is not None else ()),
                extra={"fields": {**access, **{k: v for k, v in fields.items() if k != "_headers"}}},
            )
            if traced is not None:
                spanned = {f"thinksearch.{k}": fields.get(k) for k in _SPAN_FIELDS}
                traced.end(template, status, {"thinksearch.request_id": request_id, **spanned})
            if "audit" in fields:
                _audit(scope, template, status, fields)
            REQUEST_FIELDS.reset(fields_token)
            REQUEST_ID.reset(token)


def _audit(scope: Scope, route: str, status: int, fields: dict) -> None:
    """One line per admin action and per refused request: who (key name or digest prefix, never the key), what
    (method, route, collection), the outcome, the request id (on every record)."""
    event = fields["audit"] if status < 400 or fields["audit"] == "refused" else "admin_failed"
    record = {
        "event": event,
        "key": fields.get("key_id", "-"),
        "method": scope["method"],
        "route": route,
        "collection": (scope.get("path_params") or {}).get("name"),
        "status": status,
        "reason": fields.get("refusal"),
    }
    # The text formatter escapes the message; JSON logs escape by themselves.
    audit_log.info(
        "audit %s key=%s %s %s collection=%s status=%s reason=%s",
        *(record[k] for k in ("event", "key", "method", "route", "collection", "status", "reason")),
        extra={"fields": record},
    )


def _body_timeout_s(scope: Scope) -> float | None:
    """HTTP_BODY_TIMEOUT_S of the app serving this request (Starlette puts the app in the scope); None: untimed."""
    settings = getattr(getattr(scope.get("app"), "state", None), "settings", None)
    return getattr(settings, "http_body_timeout_s", None)


class BodyTooLarge(HTTPException):
    """An HTTPException, so that FastAPI, reading a body, passes it on as a 413 (any other error from receive() it
    turns into a 400 "error parsing the body")."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__(413, f"The request body exceeds {max_bytes} bytes.")


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
                    raise BodyTooLarge(self.max_bytes)
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


# --- below ASGI: the connection, before a request exists ---


class _Refused(Exception):
    """Raised in a parser callback to stop parsing; the protocol then sends its refusal."""


def guarded_http_protocol(settings: Settings) -> type[asyncio.Protocol] | None:
    """uvicorn's httptools protocol (its default with uvicorn[standard]) with what uvicorn lacks (uvicorn 0.3x-0.5x:
    no header timeout, no header count limit, and `h11_max_incomplete_event_size` applies to h11 only):

    - the request line and headers must arrive within HTTP_HEADER_TIMEOUT_S of the connection opening or of the
      request's first byte: else 408 (nothing sent yet: the connection is just closed);
    - at most HTTP_MAX_HEADER_BYTES of request line and headers, and HTTP_MAX_HEADERS header lines: else 431;
    - past HTTP_MAX_CONCURRENCY open connections or requests in flight: 503 with Retry-After (uvicorn's own
      `limit_concurrency` answers a bare text 503).

    Each refusal is a problem+json response, then the connection is closed. None when httptools is missing: the
    caller then falls back to h11 with uvicorn's own limits (service/cli.py).
    """
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    except ImportError:  # uvicorn without httptools (not uvicorn[standard])
        return None

    header_timeout_s = settings.http_header_timeout_s
    max_header_bytes = settings.http_max_header_bytes
    max_headers = settings.http_max_headers
    max_concurrency = settings.http_max_concurrency

    class GuardedHttpToolsProtocol(HttpToolsProtocol):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._awaiting_headers = True  # the next bytes belong to a request line or headers
            self._header_bytes = 0
            self._header_lines = 0
            self._boundary_in_chunk = False  # a header block ended or a message completed in this chunk
            self._header_timer: asyncio.TimerHandle | None = None
            self._refusal: tuple[int, str, str, list[tuple[str, str]]] | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm_header_timer()  # a connection that never sends a byte is closed too

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm_header_timer()
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            if self._awaiting_headers:
                self._arm_header_timer()  # the first bytes of a request on a kept-alive connection
            self._boundary_in_chunk = False
            super().data_received(data)
            if self._awaiting_headers and not self._boundary_in_chunk and not self.transport.is_closing():
                # Counted after parsing, and only for a chunk in which no header block ended and no message
                # completed: such a chunk also carries body bytes (a whole small upload ends in one chunk).
                # httptools holds at most the limit plus one chunk of an unfinished header block.
                self._header_bytes += len(data)
                if self._header_bytes > max_header_bytes:
                    self._refuse_now(
                        "header_too_large", 431, f"The request line and headers exceed {max_header_bytes} bytes."
                    )

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._awaiting_headers = True
            self._header_lines = 0
            self._arm_header_timer()

        def on_header(self, name: bytes, value: bytes) -> None:
            self._header_lines += 1
            if self._header_lines > max_headers:
                self._refusal = ("too_many_headers", 431, f"More than {max_headers} header lines.", [])
                raise _Refused
            super().on_header(name, value)

        def on_headers_complete(self) -> None:
            self._boundary_in_chunk = True
            self._awaiting_headers = False
            self._header_bytes = 0
            self._disarm_header_timer()
            if max_concurrency is not None and (
                len(self.connections) > max_concurrency or len(self.tasks) >= max_concurrency
            ):
                detail = f"More than {max_concurrency} connections or requests at once; try again shortly."
                self._refusal = ("overloaded", 503, detail, [("retry-after", "1")])
                raise _Refused
            super().on_headers_complete()

        def on_message_complete(self) -> None:
            super().on_message_complete()
            self._boundary_in_chunk = True
            self._awaiting_headers = True  # what comes next is the next request

        def send_400_response(self, msg: str) -> None:
            # uvicorn's answer to a parser error, which a refusal raised in a callback also is.
            if self._refusal is None:
                super().send_400_response(msg)
                return
            reason, status, detail, headers = self._refusal
            self._refuse_now(reason, status, detail, headers)

        def _arm_header_timer(self) -> None:
            if self._header_timer is None:
                self._header_timer = self.loop.call_later(header_timeout_s, self._header_timeout)

        def _disarm_header_timer(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _header_timeout(self) -> None:
            self._header_timer = None
            if self.transport.is_closing() or not self._awaiting_headers:
                return
            if self.cycle is not None and not self.cycle.response_complete:
                # A response is still being sent on this connection: end the connection after it.
                self.cycle.keep_alive = False
                self.flow.pause_reading()
                return
            if self._header_bytes == 0 and not self.headers:
                HTTP_REFUSALS.labels("header_timeout").inc()
                self.transport.close()  # idle: nothing to answer
                return
            detail = f"The request line and headers did not arrive within {header_timeout_s:g} s."
            self._refuse_now("header_timeout", 408, detail)

        def _refuse_now(self, reason: str, status: int, detail: str, headers: list[tuple[str, str]] = ()) -> None:
            self._disarm_header_timer()
            HTTP_REFUSALS.labels(reason).inc()
            conn_log.warning("HTTP %d (%s) to %s", status, reason, self.client[0] if self.client else "?")
            body = json.dumps(
                {"type": "about:blank", "title": HTTPStatus(status).phrase, "status": status, "detail": detail}
            ).encode()
            head = [
                f"HTTP/1.1 {status} {HTTPStatus(status).phrase}",
                "content-type: application/problem+json",
                f"content-length: {len(body)}",
                "connection: close",
                *(f"{name}: {value}" for name, value in headers),
            ]
            self.transport.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)
            self.transport.close()

    return GuardedHttpToolsProtocol
