"""The one base of this service's clients of OpenAI-compatible servers (the thought worker, a remote embedder).

It owns the HTTP client (explicit timeouts, a bounded pool), finds the served model once, and runs each call under
the dependency's circuit breaker, raising what went wrong as the subclass's own error.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any, ClassVar, Literal

import httpx
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_exponential_jitter

from service.clients.breakers import Breakers, CircuitOpen
from service.observability import tracing

CONNECT_TIMEOUT_S = 5.0
# What a second attempt can fix: a refused or dropped connection. A slow server (a timeout) is not asked twice.
RETRYABLE = (httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError)

FailureKind = Literal["timeout", "connect", "http", "protocol", "circuit_open"]


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


class Failure(Exception):
    """A failed call before the subclass names it; the breaker counts every one but a 4xx."""

    def __init__(self, kind: FailureKind, detail: str, status: int | None = None) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind: FailureKind = kind
        self.detail = detail
        self.status = status

    @property
    def ours(self) -> bool:
        """A 4xx is our request's fault (e.g. an input over the model's length), not a sign the server is down."""
        return self.status is not None and 400 <= self.status < 500


class OpenAICompatibleClient:
    """Subclasses name their breaker and themselves, say how many attempts a refused connection gets, and turn a
    `Failure` into their own error (`_error`)."""

    breaker: ClassVar[str]  # the dependency's breaker (and metric label)
    label: ClassVar[str]  # how error details name the server, e.g. "the worker"
    connect_attempts: ClassVar[int] = 1  # > 1: a refused or dropped connection is tried again, jittered

    def __init__(
        self,
        base_url: str,
        *,
        model: str | None,
        api_key: str | None,
        timeout_s: float,
        max_connections: int,
        breakers: Breakers | None = None,
    ) -> None:
        self._http = openai_compatible_client(
            base_url, api_key=api_key, timeout_s=timeout_s, max_connections=max_connections
        )
        self._breakers = breakers
        self._model = model
        self._model_lock = asyncio.Lock()  # concurrent first calls ask for the model once

    def _error(self, failure: Failure) -> Exception:
        raise NotImplementedError

    @property
    def known_model(self) -> str | None:
        return self._model

    async def model(self) -> str:
        """The configured model, else the first the server lists (asked once)."""
        if self._model is None:
            async with self._model_lock:
                if self._model is None:
                    data = await self._call("GET", "models")
                    models = [m["id"] for m in data.get("data") or [] if isinstance(m, dict) and m.get("id")]
                    if not models:
                        raise self._error(Failure("protocol", f"{self.label} lists no model"))
                    self._model = str(models[0])
        return self._model

    async def ping(self) -> None:
        await self._call("GET", "models")

    async def aclose(self) -> None:
        await self._http.aclose()

    @contextlib.asynccontextmanager
    async def _guarded(self) -> AsyncIterator[None]:
        """The block as one call to the server: under its breaker, a `Failure` raised as the subclass's error."""
        try:
            if self._breakers is None:
                yield
            else:
                async with self._breakers.guard(
                    self.breaker, failures=(Failure,), ignore=lambda e: isinstance(e, Failure) and e.ours
                ):
                    yield
        except CircuitOpen as exc:
            raise self._error(Failure("circuit_open", str(exc))) from exc
        except Failure as failure:
            raise self._error(failure) from failure.__cause__

    async def _call(self, method: str, path: str, **kwargs: Any) -> dict:
        """One request under the breaker; its JSON object, or the subclass's error."""
        async with self._guarded():
            response = await self._send(method, path, **kwargs)
            if response.status_code >= 400:
                raise Failure("http", response.text[:300], response.status_code)
            try:
                data = response.json()
            except ValueError as exc:
                raise Failure("protocol", f"{self.label} answered with invalid JSON") from exc
            if not isinstance(data, dict):
                raise Failure("protocol", f"{self.label} answered with JSON that is not an object")
            return data
        raise AssertionError("unreachable: _guarded re-raises")  # for type checkers: the block always returns

    async def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        retrying = AsyncRetrying(
            retry=retry_if_exception_type(RETRYABLE),
            stop=stop_after_attempt(self.connect_attempts),
            wait=wait_exponential_jitter(initial=0.05, max=0.5),  # jittered: replicas do not retry in step
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt, tracing.outgoing(method, self._http.base_url, path) as (span, headers):
                    # headers: the W3C traceparent naming this request's span (empty while traces are off)
                    response = await self._http.request(method, path, headers=headers or None, **kwargs)
                    span.set_attribute("http.response.status_code", response.status_code)
                    return response
        except httpx.HTTPError as exc:
            raise self._failure(exc) from exc
        raise AssertionError("unreachable: the last attempt returns or raises")

    async def _events(self, path: str, body: dict[str, object]) -> AsyncIterator[dict]:
        """The JSON objects of a server-sent event stream, until `[DONE]`. Consume it inside `_guarded()`; it is
        never retried (what arrived may already have been used)."""
        try:
            async with contextlib.AsyncExitStack() as stack:
                span, headers = stack.enter_context(tracing.outgoing("POST", self._http.base_url, path))
                response = await stack.enter_async_context(
                    self._http.stream("POST", path, json=body, headers=headers or None)
                )
                span.set_attribute("http.response.status_code", response.status_code)
                if response.status_code >= 400:
                    detail = (await response.aread()).decode(errors="replace")[:300]
                    raise Failure("http", detail, response.status_code)
                async for line in response.aiter_lines():
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        return
                    try:
                        event = json.loads(data)
                    except ValueError as exc:
                        raise Failure("protocol", f"{self.label} streamed invalid JSON") from exc
                    if not isinstance(event, dict):
                        raise Failure("protocol", f"{self.label} streamed JSON that is not an object")
                    yield event
        except httpx.HTTPError as exc:
            raise self._failure(exc) from exc

    def _failure(self, exc: httpx.HTTPError) -> Failure:
        if isinstance(exc, httpx.TimeoutException):
            return Failure("timeout", repr(exc))
        if isinstance(exc, httpx.TransportError):
            return Failure("connect", repr(exc))
        return Failure("protocol", f"{self.label} sent an unreadable answer: {exc!r}")  # e.g. a body that won't decode
