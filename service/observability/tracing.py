"""OpenTelemetry traces: off unless OTEL_EXPORTER_OTLP_ENDPOINT (or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) is set.

The rest of the service calls the helpers below and never imports OpenTelemetry itself. While tracing is off they
are no-ops that import nothing (the SDK and the exporter are the optional `tracing` extra). The entry points call
`setup()` when they start and `shutdown()` when they stop (app lifespan, `thinksearch worker`).

When on, the SDK reads the standard variables itself: OTEL_SERVICE_NAME (default here: "thinksearch"),
OTEL_RESOURCE_ATTRIBUTES, OTEL_TRACES_SAMPLER(_ARG), OTEL_BSP_*, OTEL_EXPORTER_OTLP_(TRACES_)HEADERS / TIMEOUT /
COMPRESSION / CERTIFICATE, OTEL_PROPAGATORS (default W3C tracecontext + baggage), OTEL_SDK_DISABLED. The protocol
(OTEL_EXPORTER_OTLP_(TRACES_)PROTOCOL) is http/protobuf; grpc works once opentelemetry-exporter-otlp-proto-grpc is
installed beside the extra.

The provider is this module's, not OpenTelemetry's global one (which can be set once per process): several apps
may start and stop in one process (the tests' gateways), and FastAPI's built-in telemetry, which follows the global
provider, stays off, so the one server span per request is the HTTP middleware's (`server_span`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

log = logging.getLogger("thinksearch.tracing")

DEFAULT_SERVICE_NAME = "thinksearch"
_PROTOCOLS = {
    "http/protobuf": "opentelemetry.exporter.otlp.proto.http.trace_exporter",
    "grpc": "opentelemetry.exporter.otlp.proto.grpc.trace_exporter",
}


class _NoSpan:
    """What the helpers yield while tracing is off: takes every call a span takes, records nothing."""

    def set_attribute(self, key: str, value: Any) -> None:
        pass

    def set_attributes(self, attributes: Mapping[str, Any]) -> None:
        pass

    def record_exception(self, exception: BaseException, **_: Any) -> None:
        pass

    def update_name(self, name: str) -> None:
        pass


NO_SPAN = _NoSpan()
_OFF = contextlib.nullcontext(NO_SPAN)  # reusable: no generator per call on the hot path
_OFF_CLIENT = contextlib.nullcontext((NO_SPAN, {}))  # the headers dict stays empty: callers only read it


class _Tracing:
    """The process' tracer provider, shared by every app of the process (counted: the last to stop flushes)."""

    def __init__(self, provider: Any, tracer: Any) -> None:
        self.provider = provider
        self.tracer = tracer
        self.users = 1
        from opentelemetry import context, propagate, trace

        self.context, self.propagate, self.trace = context, propagate, trace
        self.server_kind, self.client_kind = trace.SpanKind.SERVER, trace.SpanKind.CLIENT


_state: _Tracing | None = None


def wanted(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether the environment asks for traces: an OTLP endpoint, the SDK not disabled, the exporter not `none`."""
    endpoint = environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    exporter = (environ.get("OTEL_TRACES_EXPORTER") or "otlp").strip().lower()
    disabled = (environ.get("OTEL_SDK_DISABLED") or "").strip().lower() == "true"
    return bool(endpoint) and exporter != "none" and not disabled


def enabled() -> bool:
    return _state is not None


def setup() -> bool:
    """Starts exporting traces if the environment asks for it (see `wanted`); True when tracing is on. A missing
    extra or an unsupported protocol is logged and leaves tracing off: traces never stop the service."""
    global _state
    if _state is not None:
        _state.users += 1
        return True
    if not wanted():
        return False
    protocol = (
        os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        or "http/protobuf"
    ).strip()
    if protocol not in _PROTOCOLS:
        log.error("traces off: OTEL_EXPORTER_OTLP_PROTOCOL=%s is not supported (http/protobuf or grpc)", protocol)
        return False
    try:
        import importlib

        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        exporter = importlib.import_module(_PROTOCOLS[protocol]).OTLPSpanExporter()
    except ImportError as exc:
        log.error(
            "traces off: the OpenTelemetry SDK or the %s exporter is missing (%s); install thinksearch[tracing]",
            protocol,
            exc,
        )
        return False
    from service import __version__

    resource = Resource.create({"service.version": __version__})  # + OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES
    if str(resource.attributes.get("service.name", "")).startswith("unknown_service"):
        resource = resource.merge(Resource({"service.name": DEFAULT_SERVICE_NAME}))
    provider = TracerProvider(resource=resource, shutdown_on_exit=False)
    provider.add_span_processor(BatchSpanProcessor(exporter))
    _state = _Tracing(provider, provider.get_tracer("thinksearch", __version__))
    log.info(
        "traces on: OTLP %s to %s as %s",
        protocol,
        getattr(exporter, "_endpoint", "the configured endpoint"),
        resource.attributes.get("service.name"),
    )
    return True


def shutdown() -> None:
    """The last user of the provider flushes the spans still queued and stops the exporter."""
    global _state
    if _state is None:
        return
    _state.users -= 1
    if _state.users > 0:
        return
    provider, _state = _state.provider, None
    try:
        provider.shutdown()
    except Exception:  # pragma: no cover - a failing collector must not fail the shutdown
        log.exception("flushing traces failed")


def _attributes(attributes: Mapping[str, Any] | None) -> dict[str, Any]:
    """OpenTelemetry takes str, bool, int, float and sequences of them; None is left out, anything else a string."""
    clean: dict[str, Any] = {}
    for key, value in (attributes or {}).items():
        if value is None:
            continue
        if isinstance(value, (str, bool, int, float)):
            clean[key] = value
        elif isinstance(value, (list, tuple)):
            clean[key] = [v if isinstance(v, (str, bool, int, float)) else str(v) for v in value]
        else:
            clean[key] = str(value)
    return clean


def span(name: str, attributes: Mapping[str, Any] | None = None, /, **more: Any) -> contextlib.AbstractContextManager:
    """A child span of the current one for the block (current inside it); a no-op while tracing is off. Yields the
    span (or a stand-in): `.set_attribute(...)` for what is learnt inside the block."""
    state = _state
    if state is None:
        return _OFF
    return state.tracer.start_as_current_span(name, attributes=_attributes({**(attributes or {}), **more}))


def annotate(attributes: Mapping[str, Any] | None = None, /, **more: Any) -> None:
    """Adds attributes to the current span (nothing while tracing is off)."""
    if _state is not None:
        _state.trace.get_current_span().set_attributes(_attributes({**(attributes or {}), **more}))


def current_trace_id() -> str | None:
    """The current trace's id (32 hex digits), None while tracing is off or outside a span."""
    if _state is None:
        return None
    context = _state.trace.get_current_span().get_span_context()
    return format(context.trace_id, "032x") if context.is_valid else None


@contextlib.contextmanager
def _client(state: _Tracing, method: str, base_url: object, path: str) -> Iterator[tuple[Any, dict[str, str]]]:
    url = f"{base_url}{path}"
    host = url.split("://", 1)[-1].split("/", 1)[0]
    attributes = {"http.request.method": method, "url.full": url, "server.address": host.rsplit(":", 1)[0]}
    # Not made current: the block may be an async generator's (a streamed answer), resumed between its events.
    current = state.tracer.start_span(method, kind=state.client_kind, attributes=attributes)
    headers: dict[str, str] = {}
    state.propagate.inject(headers, context=state.trace.set_span_in_context(current))  # W3C traceparent
    try:
        yield current, headers
    except BaseException as exc:
        current.record_exception(exc)
        current.set_attribute("error.type", type(exc).__name__)
        current.set_status(state.trace.Status(state.trace.StatusCode.ERROR))
        raise
    finally:
        current.end()


def outgoing(method: str, base_url: object, path: str) -> contextlib.AbstractContextManager:
    """A client span for one HTTP request to `base_url` + `path`; yields (span, headers to send: the W3C
    traceparent naming that span). While tracing is off: (stand-in, {}), and nothing is formatted."""
    state = _state
    if state is None:
        return _OFF_CLIENT
    return _client(state, method, base_url, path)


class ServerSpan:
    """The one span of an HTTP request, current from `server_span()` until `end()` (the HTTP middleware's)."""

    def __init__(self, state: _Tracing, method: str, path: str, headers: Iterable[tuple[bytes, bytes]]) -> None:
        carrier = {k.decode("latin-1"): v.decode("latin-1") for k, v in headers}
        parent = state.propagate.extract(carrier)  # the client's traceparent, if it sent one
        self._state = state
        self.span = state.tracer.start_span(
            method,
            context=parent,
            kind=state.server_kind,
            attributes={"http.request.method": method, "url.path": path},
        )
        self._token = state.context.attach(state.trace.set_span_in_context(self.span, parent))
        self.trace_id = format(self.span.get_span_context().trace_id, "032x")

    def end(self, route: str, status: int, attributes: Mapping[str, Any] | None = None) -> None:
        trace = self._state.trace
        self.span.update_name(f"{self.span.name} {route}")
        self.span.set_attributes(_attributes({"http.route": route, "http.response.status_code": status}))
        self.span.set_attributes(_attributes(attributes))
        if status >= 500:
            self.span.set_status(trace.Status(trace.StatusCode.ERROR))
            self.span.set_attribute("error.type", str(status))
        self.span.end()
        self._state.context.detach(self._token)


def server_span(method: str, path: str, headers: Iterable[tuple[bytes, bytes]]) -> ServerSpan | None:
    """Starts a request's server span (None while tracing is off), a child of the client's W3C traceparent."""
    state = _state
    return ServerSpan(state, method, path, headers) if state is not None else None


class Batch:
    """One trace per unit of background work that crosses tasks (an ingest batch: read, embed, write stages in
    three tasks). The root span is not current anywhere: each stage opens its child with `stage()`."""

    def stage(self, name: str, attributes: Mapping[str, Any] | None = None, /, **more: Any):
        return _OFF

    def record(self, name: str, start_ns: int, attributes: Mapping[str, Any] | None = None) -> None:
        """A stage that already happened, from `start_ns` (time.time_ns()) to now."""

    def end(self, attributes: Mapping[str, Any] | None = None, /, **more: Any) -> None:
        pass


_NO_BATCH = Batch()


class _TracedBatch(Batch):
    def __init__(self, state: _Tracing, name: str, start_ns: int | None, attributes: dict[str, Any]) -> None:
        self._state = state
        # A root: whatever happens to be current in the task that starts it is not its parent.
        self._root = state.tracer.start_span(
            name, context=state.context.Context(), attributes=attributes, start_time=start_ns
        )
        self._context = state.trace.set_span_in_context(self._root)
        self._ended = False

    @contextlib.contextmanager
    def stage(self, name: str, attributes: Mapping[str, Any] | None = None, /, **more: Any) -> Iterator[Any]:
        attributes = _attributes({**(attributes or {}), **more})
        try:
            with self._state.tracer.start_as_current_span(name, context=self._context, attributes=attributes) as s:
                yield s
        except BaseException as exc:  # the batch goes no further here (its entries stay pending): end its trace
            self.end({"error.type": type(exc).__name__})
            raise

    def record(self, name: str, start_ns: int, attributes: Mapping[str, Any] | None = None) -> None:
        child = self._state.tracer.start_span(
            name, context=self._context, attributes=_attributes(attributes), start_time=start_ns
        )
        child.end()

    def end(self, attributes: Mapping[str, Any] | None = None, /, **more: Any) -> None:
        if not self._ended:
            self._ended = True
            self._root.set_attributes(_attributes({**(attributes or {}), **more}))
            self._root.end()


def batch(name: str, attributes: Mapping[str, Any] | None = None, /, *, start_ns: int | None = None) -> Batch:
    """A new trace for one batch of background work (a stand-in that records nothing while tracing is off)."""
    state = _state
    if state is None:
        return _NO_BATCH
    return _TracedBatch(state, name, start_ns, _attributes(attributes))


def now_ns() -> int:
    return time.time_ns()
