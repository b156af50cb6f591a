"""OpenTelemetry traces end to end: an OTLP/HTTP receiver of the test's own (protobuf decoded with opentelemetry-proto)
gets the spans of a real gateway, a real vLLM worker (tiny model, behind a recording proxy that shows the headers it
was sent), real Redis, MiniLM and embedded Qdrant. And with OTEL_EXPORTER_OTLP_ENDPOINT unset: no SDK at all."""

from __future__ import annotations

import gzip
import json
import logging
import os
import secrets
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

pytest.importorskip("opentelemetry.sdk", reason="the tracing extra (pip install -e '.[tracing]')")
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (  # noqa: E402
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from service.observability import tracing  # noqa: E402
from tests.search.test_think import N_THOUGHTS, setup_collection, think_settings, unique  # noqa: E402
from tests.support.gateway import Gateway  # noqa: E402
from tests.support.servers import REPO_ROOT  # noqa: E402

SERVER, CLIENT = 2, 3  # opentelemetry.proto.trace.v1.Span.SpanKind
NDJSON = {"content-type": "application/x-ndjson"}


def _value(any_value):
    kind = any_value.WhichOneof("value")
    if kind == "array_value":
        return [_value(v) for v in any_value.array_value.values]
    return getattr(any_value, kind) if kind else None


class OtlpReceiver:
    """POST /v1/traces, ExportTraceServiceRequest in protobuf (gzip or not): every span, flattened."""

    def __init__(self) -> None:
        self.spans: list[dict] = []
        self.requests = 0
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                if self.path != "/v1/traces":
                    self.send_error(404)
                    return
                if self.headers.get("content-encoding") == "gzip":
                    body = gzip.decompress(body)
                receiver._add(ExportTraceServiceRequest.FromString(body))
                payload = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *_: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def _add(self, request: ExportTraceServiceRequest) -> None:
        with self._lock:
            self.requests += 1
            for resource_spans in request.resource_spans:
                resource = {kv.key: _value(kv.value) for kv in resource_spans.resource.attributes}
                for scope_spans in resource_spans.scope_spans:
                    for s in scope_spans.spans:
                        self.spans.append(
                            {
                                "name": s.name,
                                "trace_id": s.trace_id.hex(),
                                "span_id": s.span_id.hex(),
                                "parent": s.parent_span_id.hex() or None,
                                "kind": s.kind,
                                "attributes": {kv.key: _value(kv.value) for kv in s.attributes},
                                "error": s.status.code == 2,
                                "resource": resource,
                            }
                        )

    def wait_for(self, found: Callable[[list[dict]], bool], timeout: float = 20.0) -> list[dict]:
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                spans = list(self.spans)
            if found(spans):
                return spans
            if time.monotonic() > deadline:
                got = [(s["name"], s["trace_id"]) for s in spans]
                raise AssertionError(f"spans not received in {timeout} s: {got}")
            time.sleep(0.1)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class RecordingProxy:
    """Forwards every request to `target` (the real vLLM) and keeps the path and headers of each."""

    def __init__(self, target: str) -> None:
        self.seen: list[tuple[str, dict[str, str]]] = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def _forward(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                headers = {k.lower(): v for k, v in self.headers.items()}
                proxy.seen.append((self.path, headers))
                forwarded = {k: v for k, v in headers.items() if k in ("content-type", "authorization")}
                r = httpx.request(self.command, target + self.path, content=body, headers=forwarded, timeout=120)
                self.send_response(r.status_code)
                self.send_header("content-type", r.headers.get("content-type", "application/json"))
                self.send_header("content-length", str(len(r.content)))
                self.end_headers()
                self.wfile.write(r.content)

            do_GET = do_POST = _forward

            def log_message(self, *_: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class AccessLines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.fields: list[dict] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.fields.append({**getattr(record, "fields", {}), "message": record.getMessage()})


OFF_SCRIPT = r"""
import asyncio, importlib.abc, json, logging, sys

class NotInstalled(importlib.abc.MetaPathFinder):
    # As if the tracing extra were not installed: only the OpenTelemetry API (a FastAPI dependency) is there.
    def find_spec(self, name, path=None, target=None):
        if name.startswith(("opentelemetry.sdk", "opentelemetry.exporter", "opentelemetry.proto")):
            raise ImportError(f"{name} is not installed")
        return None

if sys.argv[1] == "without-extra":
    sys.meta_path.insert(0, NotInstalled())

import httpx
from asgi_lifespan import LifespanManager
from service.app import create_app
from service.observability import tracing
from service.settings import Settings

fields = []
class Lines(logging.Handler):
    def emit(self, record):
        fields.append(getattr(record, "fields", {}))
access = logging.getLogger("thinksearch.access")
access.addHandler(Lines())
access.setLevel(logging.INFO)

async def main():
    app = create_app(Settings(_env_file=None, qdrant_path=":memory:"))
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as c:
            assert (await c.post("/v1/collections", json={"name": "c"})).status_code == 201
            docs = {"documents": [{"id": "d1", "text": "Tides are caused by the Moon."}]}
            assert (await c.post("/v1/collections/c/documents", json=docs)).status_code == 200
            headers = {"traceparent": "00-" + "ab" * 16 + "-" + "cd" * 8 + "-01"}
            r = await c.post("/v1/collections/c/search", json={"query": "tides"}, headers=headers)
            assert r.status_code == 200, r.text

asyncio.run(main())
from opentelemetry import trace
tracing_modules = ("opentelemetry.sdk.trace", "opentelemetry.exporter", "opentelemetry.proto")
loaded = sorted(m for m in sys.modules if m.startswith(tracing_modules))
print(json.dumps({"loaded": loaded, "enabled": tracing.enabled(), "lines": len(fields),
                  "trace_ids": [f["trace_id"] for f in fields if "trace_id" in f],
                  "global_provider": type(trace.get_tracer_provider()).__name__}))
"""


@pytest.mark.parametrize("extra", ["with-extra", "without-extra"])
def test_without_an_endpoint_nothing_is_traced_and_no_sdk_is_imported(extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "FASTAPI_OTEL"))}
    env.update(PYTHONPATH=str(REPO_ROOT), OTEL_SERVICE_NAME="ignored-without-an-endpoint")
    for name in ("REDIS_URL", "THINKER_URL", "QDRANT_URL", "EMBEDDER_URL", "API_KEYS", "RATE_LIMITS"):
        env.pop(name, None)
    done = subprocess.run(
        [sys.executable, "-c", OFF_SCRIPT, extra], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    # FastAPI imports the OpenTelemetry API (its built-in telemetry) and redis-py the SDK's metrics when the SDK is
    # installed; the trace SDK, the exporters and the protobuf messages are never imported while traces are off,
    # and the service runs as well without them.
    assert report["loaded"] == []
    assert report["enabled"] is False and report["global_provider"] == "ProxyTracerProvider"
    assert report["lines"] >= 3 and report["trace_ids"] == []


@pytest.mark.parametrize(
    ("env", "wanted"),
    [
        ({}, False),
        ({"OTEL_SERVICE_NAME": "x"}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, True),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318", "OTEL_SDK_DISABLED": "true"}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318", "OTEL_TRACES_EXPORTER": "none"}, False),
    ],
)
def test_the_standard_variables_decide_whether_traces_are_on(env, wanted):
    assert tracing.wanted(env) is wanted


def test_an_unsupported_protocol_leaves_traces_off(monkeypatch, caplog):
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")
    if tracing.enabled():
        pytest.skip("a provider of another test is running in this process")
    with caplog.at_level(logging.ERROR, logger="thinksearch.tracing"):
        assert tracing.setup() is False
    assert not tracing.enabled() and "http/json" in caplog.text


def test_the_sdk_reads_the_service_name_and_resource_from_the_environment(monkeypatch):
    if tracing.enabled():
        pytest.skip("a provider of another test is running in this process")
    receiver = OtlpReceiver()
    try:
        for name in [k for k in os.environ if k.startswith("OTEL_")]:
            monkeypatch.delenv(name)
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.url)
        monkeypatch.setenv("OTEL_SERVICE_NAME", "search-eu")
        monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=test")
        assert tracing.setup()
        with tracing.span("probe", {"thinksearch.n": 3, "thinksearch.none": None}, ok=True) as probe:
            probe.set_attribute("later", "yes")
        tracing.shutdown()  # flushes
        assert not tracing.enabled()
        (span,) = [s for s in receiver.wait_for(lambda ss: bool(ss)) if s["name"] == "probe"]
        assert span["resource"]["service.name"] == "search-eu"
        assert span["resource"]["deployment.environment"] == "test"
        assert span["attributes"] == {"thinksearch.n": 3, "ok": True, "later": "yes"}  # None is left out
    finally:
        receiver.close()


@pytest.fixture(scope="module")
def traced(vllm, redis_server) -> Iterator[tuple[Gateway, OtlpReceiver, RecordingProxy, AccessLines]]:
    receiver, proxy = OtlpReceiver(), RecordingProxy(vllm.url)
    access, logger = AccessLines(), logging.getLogger("thinksearch.access")
    level = logger.level
    logger.addHandler(access)
    logger.setLevel(logging.INFO)
    with pytest.MonkeyPatch.context() as env:
        for name in [k for k in os.environ if k.startswith("OTEL_")]:
            env.delenv(name)
        env.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.url)
        env.setenv("OTEL_BSP_SCHEDULE_DELAY", "100")  # ms: spans reach the receiver within the tests' patience
        settings = think_settings(thinker_url=f"{proxy.url}/v1", redis_url=redis_server.url)
        try:
            with Gateway(settings) as gw:
                gw.collection = setup_collection(gw)
                yield gw, receiver, proxy, access
        finally:
            logger.removeHandler(access)
            logger.setLevel(level)
            proxy.close()
            receiver.close()
    assert not tracing.enabled()  # the gateway's lifespan stopped the provider it started


def in_trace(trace_id: str, *names: str) -> Callable[[list[dict]], bool]:
    def found(spans: list[dict]) -> bool:
        mine = [s for s in spans if s["trace_id"] == trace_id]
        return any(s["kind"] == SERVER for s in mine) and set(names) <= {s["name"] for s in mine}

    return found


def test_think_search_is_one_trace_from_the_client_to_vllm(traced):
    gw, receiver, proxy, access = traced
    trace_id, caller = secrets.token_hex(16), secrets.token_hex(8)
    sent = len(proxy.seen)
    r = gw.client.post(
        f"/v1/collections/{gw.collection}/search",
        json={"query": unique("what moves the oceans twice a day"), "think": True},
        headers={"traceparent": f"00-{trace_id}-{caller}-01"},
    )
    assert r.status_code == 200, r.text
    assert r.json()["mode"] == "think" and r.json()["thought_cache"] == "miss"

    spans = receiver.wait_for(in_trace(trace_id, "cache", "think", "embed", "search", "think.generate", "POST"))
    mine = [s for s in spans if s["trace_id"] == trace_id]
    (server,) = [s for s in mine if s["kind"] == SERVER]  # one server span: FastAPI's own telemetry stays off
    assert server["parent"] == caller  # a child of the client's traceparent
    assert server["name"] == "POST /v1/collections/{name}/search"
    assert server["attributes"]["http.route"] == "/v1/collections/{name}/search"
    assert server["attributes"]["http.response.status_code"] == 200
    assert server["attributes"]["thinksearch.mode"] == "think"
    assert server["attributes"]["thinksearch.thought_cache"] == "miss"
    assert server["resource"]["service.name"] == "thinksearch"  # OTEL_SERVICE_NAME unset: the default

    by_name = {s["name"]: s for s in mine}
    children = {s["name"] for s in mine if s["parent"] == server["span_id"]}
    assert {"cache", "think", "embed", "search"} <= children
    generate = by_name["think.generate"]
    assert generate["parent"] == by_name["think"]["span_id"]
    assert generate["attributes"]["gen_ai.request.choice.count"] == N_THOUGHTS
    assert generate["attributes"]["gen_ai.request.max_tokens"] == 24
    assert generate["attributes"]["gen_ai.request.model"] == "tiny-think"
    assert generate["attributes"]["gen_ai.usage.output_tokens"] > 0
    assert generate["attributes"]["thinksearch.think.thoughts"] == N_THOUGHTS
    (call,) = [s for s in mine if s["kind"] == CLIENT and s["parent"] == generate["span_id"]]
    url = call["attributes"]["url.full"]
    assert url.startswith(f"{proxy.url}/v1/") and url.endswith("completions")
    assert call["attributes"]["http.response.status_code"] == 200

    # vLLM was sent the same trace, with the client span as the parent.
    (worker_request,) = [h for path, h in proxy.seen[sent:] if path.endswith("completions")]
    version, worker_trace, worker_parent, flags = worker_request["traceparent"].split("-")
    assert (version, worker_trace, worker_parent, flags) == ("00", trace_id, call["span_id"], "01")

    # The access line carries the trace id (text message and JSON fields).
    lines = [f for f in access.fields if f.get("route") == "/v1/collections/{name}/search" and f.get("trace_id")]
    assert any(f["trace_id"] == trace_id and f"trace_id={trace_id}" in f["message"] for f in lines)


def test_a_request_without_traceparent_starts_a_trace(traced):
    gw, receiver, _, access = traced
    request_id = uuid.uuid4().hex
    r = gw.client.get(f"/v1/collections/{gw.collection}", headers={"x-request-id": request_id})
    assert r.status_code == 200

    def mine(s: dict) -> bool:
        return s["kind"] == SERVER and s["attributes"].get("thinksearch.request_id") == request_id

    (server,) = [s for s in receiver.wait_for(lambda spans: any(map(mine, spans))) if mine(s)]
    assert server["parent"] is None and server["name"] == "GET /v1/collections/{name}"
    assert any(f.get("trace_id") == server["trace_id"] for f in access.fields)


def test_a_bulk_batch_is_a_trace_of_read_embed_write(traced):
    gw, receiver, _, _ = traced
    name = f"bulk_{uuid.uuid4().hex[:8]}"
    assert gw.client.post("/v1/collections", json={"name": name}).status_code == 201
    docs = [{"id": f"b{i}", "text": f"Bulk document number {i} about tides and the Moon."} for i in range(5)]
    body = "".join(json.dumps(d) + "\n" for d in docs).encode()
    r = gw.client.post(f"/v1/collections/{name}/documents/bulk", content=body, headers=NDJSON)
    assert r.status_code == 202, r.text
    job_id = r.json()["job_id"]

    def batches(spans: list[dict]) -> list[dict]:
        return [
            s for s in spans if s["name"] == "ingest.batch" and job_id in s["attributes"]["thinksearch.ingest.jobs"]
        ]

    def done(spans: list[dict]) -> bool:
        return sum(s["attributes"].get("thinksearch.ingest.written", 0) for s in batches(spans)) == len(docs)

    spans = receiver.wait_for(done, timeout=60)
    roots = batches(spans)
    assert roots
    for root in roots:
        assert root["parent"] is None and root["attributes"]["thinksearch.ingest.collections"] == [name]
        stages = {s["name"]: s for s in spans if s["parent"] == root["span_id"]}
        assert set(stages) == {"read", "embed", "write"}
        assert all(s["trace_id"] == root["trace_id"] for s in stages.values())
        assert stages["embed"]["attributes"]["thinksearch.ingest.documents"] >= 1
        written = root["attributes"]["thinksearch.ingest.written"]
        assert stages["write"]["attributes"]["thinksearch.ingest.written"] == written


def test_streamed_thoughts_carry_the_trace_to_vllm(traced, redis_server):
    _, receiver, proxy, _ = traced
    settings = think_settings(thinker_url=f"{proxy.url}/v1", redis_url=redis_server.url, think_stream=True)
    with Gateway(settings) as gw:  # a second app of the process: it shares the running provider
        collection = setup_collection(gw)
        trace_id = secrets.token_hex(16)
        sent = len(proxy.seen)
        r = gw.client.post(
            f"/v1/collections/{collection}/search",
            json={"query": unique("why do leaves turn green"), "think": True},
            headers={"traceparent": f"00-{trace_id}-{secrets.token_hex(8)}-01"},
        )
        assert r.status_code == 200 and r.json()["mode"] == "think", r.text
    assert tracing.enabled()  # still on: the module's gateway runs
    spans = receiver.wait_for(in_trace(trace_id, "think.generate", "POST"))
    mine = {s["name"]: s for s in spans if s["trace_id"] == trace_id}
    generate, call = mine["think.generate"], mine["POST"]
    assert generate["attributes"]["thinksearch.think.stream"] is True
    assert generate["attributes"]["gen_ai.usage.output_tokens"] > 0
    assert call["parent"] == generate["span_id"] and call["kind"] == CLIENT
    (worker_request,) = [h for path, h in proxy.seen[sent:] if path.endswith("completions")]
    assert worker_request["traceparent"] == f"00-{trace_id}-{call['span_id']}-01"
