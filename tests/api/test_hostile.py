"""Hostile input (docs/api.md, "Metadata and filters", "HTTP connections"): each case answers a clear 4xx (or a
rejected bulk line), the service stays ready, and nothing already stored changes. Real components: the app on the
embedded Qdrant Edge store with the real MiniLM embedder, and a real `thinksearch serve` process for what happens
below HTTP (slow and oversized requests)."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import select
import socket
import subprocess
import sys
import time
import uuid

import pytest

from service.api.protocol import is_collection_name
from service.ingest.memory_queue import MemoryBroker
from service.observability.context import RequestIdLogFilter
from service.observability.logs import TEXT_FORMAT, JsonFormatter, TextFormatter
from service.settings import Settings
from tests.ingest.support import NDJSON, wait_job
from tests.support.gateway import Gateway, spawn_gateway
from tests.support.servers import REPO_ROOT, free_port

DOCS = [
    {"id": "cats", "title": "Pets", "text": "Cats are small domesticated felines.", "metadata": {"lang": "en", "n": 1}},
    {"id": "tides", "text": "Tides are caused by the Moon's gravity.", "metadata": {"lang": "de", "tags": ["sea"]}},
]
JSON = {"content-type": "application/json"}
DEEP = 100_000  # far past Python's recursion limit (json.loads raises RecursionError)


@pytest.fixture(scope="module")
def gw(tmp_path_factory):
    """On Qdrant Edge, the embedded default: it is the store that raised on JSON-path keys and odd numbers."""
    folder = tmp_path_factory.mktemp("edge-hostile")
    with Gateway(Settings(_env_file=None, qdrant_embedded="edge", qdrant_path=str(folder))) as gateway:
        yield gateway


@pytest.fixture
def collection(gw):
    name = f"h_{uuid.uuid4().hex[:8]}"
    assert gw.client.post("/v1/collections", json={"name": name}).status_code == 201
    assert gw.client.post(f"/v1/collections/{name}/documents", json={"documents": DOCS}).status_code == 200
    yield name
    gw.client.delete(f"/v1/collections/{name}")


def snapshot(client, name):
    count = client.get(f"/v1/collections/{name}").json()["count"]
    return count, {d["id"]: client.get(f"/v1/collections/{name}/documents/{d['id']}").json() for d in DOCS}


def assert_problem(response, status):
    assert response.status_code == status, response.text[:500]
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["status"] == status and body["title"] and body["detail"]
    assert "Traceback" not in response.text
    return body


def assert_ready(client):
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["status"] == "ready", ready.text


def fill(template: str, value: object) -> str:
    """`template` with `value` in place of "@" (JSON is full of braces and percent signs are for formats)."""
    return template.replace("@", str(value))


def post_raw(client, url, text: str):
    """The body as given: Python's json accepts NaN, Infinity and huge integers, so a client can send them."""
    return client.post(url, content=text.encode("utf-8", "surrogatepass"), headers=JSON)


# --- item 1: metadata and filter keys and values ---

HOSTILE_METADATA = [
    '{"a[": "v"}',
    '{"": "v"}',
    '{"a.b": 1}',
    '{"a]": 1}',
    '{"a\\"b": 1}',
    '{"x y": 1}',
    '{"\\u00fc": 1}',
    '{"a\\nb": 1}',
    fill('{"@": 1}', "k" * 65),
    fill('{"n": @}', 2**70),
    fill('{"n": @}', -(2**63 + 1)),
    fill('{"n": @}', 2**64 - 1),
    '{"n": NaN}',
    '{"n": Infinity}',
    '{"n": -Infinity}',
    '{"n": 1e999}',
    '{"n": [1, NaN]}',
    fill('{"s": "@"}', "v" * 4097),
    fill('{"l": [@]}', ",".join(["1"] * 1001)),
    '{"l": [[1]]}',
    '{"o": {"nested": 1}}',
    '{"s": "\\ud800"}',
    '{"\\udfff": 1}',
]


@pytest.mark.parametrize("metadata", HOSTILE_METADATA)
def test_hostile_metadata_is_422_naming_the_document_and_nothing_changes(gw, collection, metadata):
    before = snapshot(gw.client, collection)
    poisoned = fill('{"id": "p1", "text": "poison", "metadata": @}', metadata)
    body = fill('{"documents": [{"id": "ok", "text": "fine"}, @]}', poisoned)
    problem = assert_problem(post_raw(gw.client, f"/v1/collections/{collection}/documents", body), 422)
    assert "documents[1].metadata" in {e["field"] for e in problem["errors"]}, problem
    assert snapshot(gw.client, collection) == before  # all-or-nothing: "ok" was not written either
    assert gw.client.get(f"/v1/collections/{collection}/documents/ok").status_code == 404
    assert_ready(gw.client)


HOSTILE_FILTERS = [
    '{"a[": 1}',
    '{"": 1}',
    '{"a.b": "x"}',
    '{"a\\"": 1}',
    '{"x y": "v"}',
    fill('{"@": 1}', "k" * 65),
    fill('{"n": @}', 2**70),
    fill('{"n": @}', -(2**63 + 1)),
    '{"n": NaN}',
    '{"n": Infinity}',
    '{"n": [1, -Infinity]}',
    fill('{"s": "@"}', "v" * 4097),
    fill('{"l": [@]}', ",".join(['"v"'] * 1001)),
    '{"l": []}',
    '{"l": [[1]]}',
    '{"n": null}',
    '{"s": "\\ud800"}',
    "{" + ",".join(f'"k{i}": 1' for i in range(33)) + "}",
]


@pytest.mark.parametrize("flt", HOSTILE_FILTERS)
def test_hostile_filters_are_422_in_single_and_batch_search(gw, collection, flt):
    single = post_raw(gw.client, f"/v1/collections/{collection}/search", fill('{"query": "cats", "filter": @}', flt))
    assert "filter" in {e["field"] for e in assert_problem(single, 422)["errors"]}
    batch = post_raw(
        gw.client,
        f"/v1/collections/{collection}/search/batch",
        fill('{"searches": [{"query": "cats"}, {"query": "cats", "filter": @}]}', flt),
    )
    assert "searches[1].filter" in {e["field"] for e in assert_problem(batch, 422)["errors"]}
    assert_ready(gw.client)


def test_valid_keys_and_edge_values_still_work(gw, collection):
    metadata = {"a-b_C9": 2**63 - 1, "k" * 64: "v" * 4096, "neg": -(2**63), "f": 1e308, "l": list(range(1000))}
    doc = {"id": "edge", "text": "values at their limits", "metadata": metadata}
    assert gw.client.post(f"/v1/collections/{collection}/documents", json={"documents": [doc]}).status_code == 200
    assert gw.client.get(f"/v1/collections/{collection}/documents/edge").json()["metadata"] == metadata
    for flt in ({"a-b_C9": 2**63 - 1}, {"neg": -(2**63)}, {"k" * 64: "v" * 4096}, {"l": list(range(999, 1999))}):
        r = gw.client.post(f"/v1/collections/{collection}/search", json={"query": "limits", "filter": flt})
        assert r.status_code == 200, r.text
        assert [h["id"] for h in r.json()["results"]] == ["edge"], flt
    many_keys = {f"k{i}": 1 for i in range(32)}
    r = gw.client.post(f"/v1/collections/{collection}/search", json={"query": "x", "filter": many_keys})
    assert r.status_code == 200 and r.json()["results"] == []


def test_bulk_lines_with_hostile_metadata_are_rejected_by_line_and_ingest_goes_on(gw, collection):
    lines = [
        json.dumps({"id": "good-1", "text": "A first good document."}),
        '{"id": "p1", "text": "poison", "metadata": {"a[": "v"}}',
        '{"id": "p2", "text": "poison", "metadata": {"": 1}}',
        fill('{"id": "p3", "text": "poison", "metadata": {"n": @}}', 2**70),
        '{"id": "p4", "text": "poison", "metadata": {"n": NaN}}',
        '{"id": "p5", "text": "poison", "metadata": {"n": Infinity}}',
        "[" * DEEP + "]" * DEEP,
        '{"id": "\\ud800", "text": "x"}',
        json.dumps({"id": "good-2", "text": "A second good document."}),
    ]
    r = gw.client.post(
        f"/v1/collections/{collection}/documents/bulk",
        content="\n".join(lines).encode("utf-8", "surrogatepass") + b"\n",
        headers=NDJSON,
    )
    assert r.status_code == 202, r.text
    job = wait_job(gw.client, r.json()["job_id"], timeout=120)
    assert job["status"] == "succeeded" and job["accepted"] == job["processed"] == 2, job
    by_line = {e["line"]: e for e in job["errors"]}
    assert set(by_line) == {2, 3, 4, 5, 6, 7, 8} and job["failed"] == 7
    assert 'key "a["' in by_line[2]["error"] and by_line[2]["id"] == "p1"
    assert "64 bits" in by_line[4]["error"] and "finite" in by_line[5]["error"] and "finite" in by_line[6]["error"]
    assert "nested too deeply" in by_line[7]["error"]
    assert by_line[8]["id"] == "\\ud800"  # a lone surrogate, escaped: GET /v1/jobs/{id} stays servable
    assert snapshot(gw.client, collection)[0] == len(DOCS) + 2
    # The worker is alive: a later upload is written too.
    again = gw.client.post(
        f"/v1/collections/{collection}/documents/bulk", content=b'{"id": "good-3", "text": "later"}\n', headers=NDJSON
    )
    assert wait_job(gw.client, again.json()["job_id"], timeout=120)["processed"] == 1
    assert_ready(gw.client)


# --- item 2: nesting ---


@pytest.mark.parametrize(
    ("path", "template"),
    [
        ("search", '{"query": "x", "filter": @}'),
        ("search", '{"query": @}'),
        ("search/batch", '{"searches": [{"query": "x", "filter": @}]}'),
        ("documents", '{"documents": [{"id": "a", "text": "x", "metadata": @}]}'),
        ("warm", '{"queries": @}'),
        ("", '{"name": @}'),
    ],
)
def test_deeply_nested_bodies_are_client_errors(gw, collection, path, template):
    url = f"/v1/collections/{collection}/{path}" if path else "/v1/collections"
    before = snapshot(gw.client, collection)
    for depth, status in ((DEEP, 400), (500, 422)):  # past the parser's depth: 400; within it: not a valid field
        nested = "[" * depth + "]" * depth
        problem = assert_problem(post_raw(gw.client, url, fill(template, nested)), status)
        if status == 400:
            assert "nested too deeply" in problem["detail"]
    assert snapshot(gw.client, collection) == before
    assert_ready(gw.client)


# --- strings the store or the response could not encode, names the client made up ---


def test_lone_surrogates_and_made_up_field_names_are_422(gw, collection):
    before = snapshot(gw.client, collection)
    # A title with a lone surrogate used to reach the embedder and come back as a 503.
    title = '{"documents": [{"id": "t", "text": "x", "title": "\\udfff"}]}'
    r = post_raw(gw.client, f"/v1/collections/{collection}/documents", title)
    assert "documents[0].title" in {e["field"] for e in assert_problem(r, 422)["errors"]}
    # An unknown field is named in the 422: a name UTF-8 cannot encode, or a very long one, must not break it.
    for name in ("\\ud800", "f" * 10_000, "a\\nb"):
        r = post_raw(gw.client, f"/v1/collections/{collection}/search", fill('{"query": "x", "@": 1}', name))
        problem = assert_problem(r, 422)
        assert len(r.content) < 5000 and problem["errors"]
    assert snapshot(gw.client, collection) == before
    assert_ready(gw.client)


# --- item 5: names, readiness, keys, the job table ---


def test_a_collection_name_with_a_trailing_newline_is_no_collection(gw, collection):
    assert not is_collection_name(f"{collection}\n") and is_collection_name(collection)
    for suffix in ("%0A", "%0D%0A", "%00"):
        assert_problem(gw.client.get(f"/v1/collections/{collection}{suffix}"), 404)
        assert_problem(gw.client.post(f"/v1/collections/{collection}{suffix}/search", json={"query": "x"}), 404)
    assert_problem(gw.client.post("/v1/collections", json={"name": f"{collection}x\n"}), 422)
    assert gw.client.get(f"/v1/collections/{collection}").json()["count"] == len(DOCS)


def test_open_readiness_shows_states_but_no_paths(gw):
    body = gw.client.get("/readyz").json()
    assert body["status"] == "ready"
    folder = gw.settings.qdrant_path
    assert folder not in json.dumps(body)
    for name in ("vector_store", "embedder", "thought_cache", "ingest_queue"):
        assert body["dependencies"][name]["ok"] is True and body["dependencies"][name]["detail"] == "ok"
    assert body["dependencies"]["vector_store"]["breaker"] == "closed"  # the breaker's state is kept


@pytest.mark.parametrize(
    "keys",
    [
        {"k3y-secret": ["serch"]},
        {"k-fine": ["search"], "k3y-secret": {"scopes": ["admin"], "rate_limits": {"serch": {"rate": 1, "burst": 1}}}},
        {"k3y-secret": "admin"},
    ],
)
def test_a_bad_api_keys_entry_is_named_by_number_never_by_its_key(keys):
    number = list(keys).index("k3y-secret") + 1
    with pytest.raises(ValueError) as failure:
        Settings(_env_file=None, api_keys=keys)
    assert "k3y-secret" not in str(failure.value) and f"API_KEYS entry {number}" in str(failure.value)


def test_thinksearch_serve_with_a_mistyped_scope_fails_without_printing_the_key(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "QDRANT_PATH": ":memory:"}
    env["API_KEYS"] = '{"k3y-secret": ["serch"]}'
    run = subprocess.run(
        [sys.executable, "-m", "service.cli", "serve", "--port", str(free_port())],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode != 0
    output = run.stdout + run.stderr
    assert "API_KEYS entry 1" in output and "k3y-secret" not in output, output[-2000:]


def test_a_flood_of_jobs_never_evicts_a_job_in_progress():
    async def scenario():
        broker = MemoryBroker(queue_max=1000, max_errors=10, max_jobs=5)
        others = [await broker.create_job("theirs") for _ in range(2)]
        for job in others:  # in progress: documents queued, not yet written
            await broker.enqueue(job.job_id, "theirs", [(1, "{}")])
        finished_early = await broker.create_job("theirs")
        await broker.seal(finished_early.job_id, total=0, rejected=0, errors=[])
        flood = []
        for _ in range(50):  # one caller's flood, each job finished at once
            job = await broker.create_job("mine")
            await broker.seal(job.job_id, total=0, rejected=0, errors=[])
            flood.append(job)
        for job in others:
            assert (await broker.get(job.job_id)).status == "queued"
        kept = await broker.list(None, 100)
        assert len(kept) == 5 and {j.job_id for j in others} <= {j.job_id for j in kept}
        assert finished_early.job_id not in {j.job_id for j in kept}  # finished: oldest out first
        assert [j.job_id for j in kept if j.collection == "mine"] == [j.job_id for j in reversed(flood[-3:])]
        # Every record in progress: the table grows past its size rather than forget one.
        busy = MemoryBroker(queue_max=1000, max_errors=10, max_jobs=2)
        jobs = [await busy.create_job("c") for _ in range(4)]
        for job in jobs:
            assert (await busy.get(job.job_id)).status == "queued"

    asyncio.run(scenario())


# --- item 6: the batch's character budget ---


def test_a_batch_of_long_queries_is_422_naming_searches(gw, collection):
    long = {"searches": [{"query": "x" * 8000, "think": False} for _ in range(64)]}
    problem = assert_problem(gw.client.post(f"/v1/collections/{collection}/search/batch", json=long), 422)
    assert problem["errors"][0]["field"] == "searches" and "16000 characters" in problem["detail"]
    typical = {"searches": [{"query": f"why do cats purr {i} " + "w" * 200, "think": False} for i in range(64)]}
    r = gw.client.post(f"/v1/collections/{collection}/search/batch", json=typical)
    assert r.status_code == 200 and len(r.json()["responses"]) == 64


# --- item 3: the access log ---

FORGED = "2026-12-01 12:00:00,000 INFO thinksearch.access [forged] DELETE /v1/collections/c1 204"


def test_the_access_log_escapes_control_characters_in_text_and_stays_json(gw, collection):
    text, js = io.StringIO(), io.StringIO()
    handlers = []
    for stream, formatter in ((text, TextFormatter(TEXT_FORMAT)), (js, JsonFormatter())):
        handler = logging.StreamHandler(stream)
        handler.setFormatter(formatter)
        handler.addFilter(RequestIdLogFilter())
        handlers.append(handler)
    access = logging.getLogger("thinksearch.access")
    old_level = access.level
    access.setLevel(logging.INFO)
    for handler in handlers:
        access.addHandler(handler)
    try:
        for forged in (f"x%0A{FORGED}", f"x%0D%0A{FORGED}", "x%1B%5B2J%C2%85%E2%80%A8y"):
            r = gw.client.get(f"/v1/collections/{collection}/documents/{forged.replace(' ', '%20')}")
            assert r.status_code == 404
        deadline = time.monotonic() + 5  # the access line is written after the response is sent
        while len(js.getvalue().splitlines()) < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        for handler in handlers:
            access.removeHandler(handler)
        access.setLevel(old_level)
    lines = text.getvalue().splitlines()
    assert len(lines) == 3, text.getvalue()
    assert not any(line.startswith("2026-12-01 12:00:00") for line in lines)
    assert "x\\x0a2026-12-01" in lines[0] and "x\\x0d\\x0a2026" in lines[1]
    assert "\\x1b[2J\\x85\\u2028y" in lines[2]
    records = [json.loads(line) for line in js.getvalue().splitlines()]
    assert len(records) == 3 and all(r["logger"] == "thinksearch.access" for r in records)
    assert records[0]["status"] == 404 and "\n" not in records[0]["message"]


def test_tracebacks_in_text_logs_cannot_start_a_line():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(TextFormatter(TEXT_FORMAT))
    handler.addFilter(RequestIdLogFilter())
    logger = logging.getLogger("thinksearch.test-hostile")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        try:
            raise ValueError(f"bad key\n{FORGED}\r")
        except ValueError:
            logger.exception("failed: %s", "x\ny")
    finally:
        logger.removeHandler(handler)
    first, *rest = stream.getvalue().rstrip("\n").split("\n")
    assert first.endswith("failed: x\\x0ay")
    assert rest and all(line.startswith("    ") for line in rest)
    assert any(FORGED in line for line in rest)


# --- item 4: connections, on a real `thinksearch serve` process ---

LIMITS = {
    "HTTP_HEADER_TIMEOUT_S": "1",
    "HTTP_BODY_TIMEOUT_S": "1",
    "HTTP_KEEP_ALIVE_TIMEOUT_S": "1",
    "HTTP_MAX_HEADER_BYTES": "8192",
    "HTTP_MAX_HEADERS": "20",
    "HTTP_MAX_CONCURRENCY": "6",
}


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    folder = tmp_path_factory.mktemp("served")
    port = free_port()
    env = {**LIMITS, "QDRANT_PATH": str(folder / "store"), "QDRANT_EMBEDDED": "edge", "SHUTDOWN_DRAIN_S": "0"}
    proc = spawn_gateway(port, env, folder / "serve.log")
    try:
        yield port, folder / "serve.log"
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=10)


def _send(sock: socket.socket, data: bytes) -> bool:
    """Sends unless the server has answered (or closed) already; False then. Sending on after the server closed
    would make it reset the connection, and its answer could be lost."""
    if select.select([sock], [], [], 0)[0]:
        return False
    try:
        sock.sendall(data)
    except OSError:
        return False
    return True


def _read_until_closed(sock: socket.socket, limit_s: float = 8.0) -> bytes:
    """Everything the server sends until it closes the connection; a test failure if it keeps it open (the limit is
    far past every timeout the served settings use)."""
    sock.settimeout(limit_s)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except (ConnectionResetError, BrokenPipeError):
        pass
    except TimeoutError:
        pytest.fail(f"the server kept the connection open for {limit_s} s; it had sent {data[:200]!r}")
    finally:
        sock.close()
    return data


def _status(response: bytes) -> int:
    return int(response.split(b" ", 2)[1]) if response.startswith(b"HTTP/1.1 ") else 0


def _http(port: int, request: bytes) -> bytes:
    sock = _connect(port)
    sock.sendall(request)
    return _read_until_closed(sock)


def _ready(port: int) -> None:
    response = _http(port, b"GET /readyz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    assert _status(response) == 200 and b'"status":"ready"' in response, response[:300]


def test_an_idle_connection_is_closed(served):
    port, _ = served
    data = _read_until_closed(_connect(port))
    assert data == b""  # HTTP_HEADER_TIMEOUT_S=1: closed, nothing to answer
    sock = _connect(port)
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
    data = _read_until_closed(sock)
    assert _status(data) == 200  # then closed while idle on keep-alive: HTTP_KEEP_ALIVE_TIMEOUT_S=1
    _ready(port)


def test_trickled_headers_are_408(served):
    port, _ = served
    sock = _connect(port)
    _send(sock, b"GET /healthz HTTP/1.1\r\n")
    closed = False
    for _ in range(25):  # a header line every 0.2 s for 5 s, never the end of the headers
        time.sleep(0.2)
        if not _send(sock, b"X-Slow: 1\r\n"):
            closed = True
            break
    data = _read_until_closed(sock)
    assert closed  # HTTP_HEADER_TIMEOUT_S=1: the server hung up however often a byte came
    assert _status(data) == 408 and b"application/problem+json" in data, data[:300]
    _ready(port)


def test_a_huge_header_block_is_431(served):
    port, _ = served
    sock = _connect(port)
    _send(sock, b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Big: ")
    for _ in range(15):  # 15 MiB of one header, as in the report
        if not _send(sock, b"a" * (1 << 20)):
            break
        time.sleep(0.05)
    data = _read_until_closed(sock)
    assert _status(data) == 431 and b"8192 bytes" in data, data[:300]
    many = b"".join(b"X-H%d: v\r\n" % i for i in range(30))
    data = _http(port, b"GET /healthz HTTP/1.1\r\nHost: t\r\n" + many + b"\r\n")
    assert _status(data) == 431 and b"header lines" in data, data[:300]
    _ready(port)


def test_a_trickled_body_is_408_and_nothing_is_written(served):
    port, _ = served
    create = b'{"name": "slow"}'
    head = b"POST /v1/collections HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
    sock = _connect(port)
    _send(sock, head + b"Content-Length: %d\r\n\r\n" % len(create) + create[:5])  # and then nothing
    data = _read_until_closed(sock)
    assert _status(data) == 408 and b"request body" in data, data[:300]
    assert _status(_http(port, b"GET /v1/collections/slow HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")) == 404
    bulk = b"POST /v1/collections/slow/documents/bulk HTTP/1.1\r\nHost: t\r\nContent-Type: application/x-ndjson\r\n"
    sock = _connect(port)
    _send(sock, b"POST /v1/collections HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n")
    _send(sock, b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(create) + create)
    assert _status(_read_until_closed(sock)) == 201
    sock = _connect(port)
    _send(sock, bulk + b"Transfer-Encoding: chunked\r\n\r\n" + b"20\r\n" + b'{"id": "a", "text": "first line"}'[:32])
    data = _read_until_closed(sock)
    assert _status(data) == 408, data[:300]
    count = _http(port, b"GET /v1/collections/slow HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    assert b'"count":0' in count, count[-200:]
    _ready(port)


def test_past_the_concurrency_limit_new_requests_get_503(served):
    port, _ = served
    idle = [_connect(port) for _ in range(6)]  # HTTP_MAX_CONCURRENCY=6 connections held open
    try:
        time.sleep(0.1)
        data = _http(port, b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        assert _status(data) == 503 and b"retry-after: 1" in data.lower(), data[:300]
    finally:
        for sock in idle:
            sock.close()
    time.sleep(0.3)
    _ready(port)


def test_a_forged_access_line_is_escaped_in_the_real_log(served):
    port, log_path = served
    path = f"/v1/collections/c1/documents/x%0A{FORGED.replace(' ', '%20')}"
    assert _status(_http(port, f"GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode())) == 404
    deadline = time.monotonic() + 5
    while "x\\x0a2026-12-01" not in log_path.read_text() and time.monotonic() < deadline:
        time.sleep(0.1)
    lines = log_path.read_text().splitlines()
    assert any("GET /v1/collections/c1/documents/x\\x0a2026-12-01" in line for line in lines)
    assert not any(line.startswith("2026-12-01 12:00:00,000") for line in lines)
