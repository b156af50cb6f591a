"""The browser console (issue 18) in a real Chromium, against a real gateway with a real vLLM thought worker (the
tiny model), real Redis and real MiniLM: load /ui with no console error, create a collection, upload a file and
watch the bar reach 100 %, browse it, search with think on (direct results, then think results and thoughts), search
with the worker paused (the degraded reason), the health panel. One module: the steps build on each other."""

from __future__ import annotations

import json
import re
import uuid

import pytest

from tests.search.test_think import N_THOUGHTS, think_settings
from tests.support.gateway import Gateway
from tests.ui.conftest import Console

pytestmark = pytest.mark.timeout(600)

TOPICS = [
    "Tides are caused by the gravitational pull of the Moon and the Sun on the oceans.",
    "Photosynthesis converts light energy into chemical energy stored in sugars.",
    "Vaccines train the immune system to recognise pathogens before an infection.",
    "Inflation erodes the purchasing power of money over time.",
    "Volcanoes erupt when magma rises through cracks in the Earth's crust.",
    "Antibiotics kill bacteria but do not work against viruses.",
]


@pytest.fixture(scope="module")
def gw(vllm, redis_server):
    with Gateway(think_settings(thinker_url=vllm.base_url, redis_url=redis_server.url)) as gateway:
        yield gateway


@pytest.fixture(scope="module")
def state() -> dict:
    """What the steps share: the collection the console made."""
    return {"collection": f"ui_{uuid.uuid4().hex[:6]}"}


def ndjson_file(tmp_path, n: int = 30, bad_line: int = 4):
    """n documents, one line of them broken on purpose (its error must be shown with its line number)."""
    lines = []
    for i in range(n):
        if i + 1 == bad_line:
            lines.append('{"id": "broken", "text": ')
            continue
        text = f"{TOPICS[i % len(TOPICS)]} Note {i}."
        lines.append(json.dumps({"id": f"doc-{i:02d}", "title": f"Note {i}", "text": text, "metadata": {"n": i}}))
    path = tmp_path / "docs.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path, n - 1


def test_ui_loads_with_no_console_error_and_a_strict_csp(gw, console: Console, shots):
    page = console.page
    r = gw.client.get("/", follow_redirects=False)
    assert r.status_code == 307 and r.headers["location"] == "/ui"
    page.goto(gw.url + "/")
    assert page.url == gw.url + "/ui"
    page.wait_for_selector("[data-testid=collections]")
    page.wait_for_load_state("networkidle")
    console.shot("01-console-loaded")
    assert console.errors == []

    # Page weight on first load: every byte the browser fetched for the page (bodies and headers).
    weight = page.evaluate(
        """() => performance.getEntriesByType("navigation").concat(performance.getEntriesByType("resource"))
              .filter((e) => new URL(e.name).pathname.startsWith("/ui"))
              .reduce((sum, e) => sum + e.transferSize, 0)"""
    )
    bodies = sum(size for _, _, size in console.responses)
    (shots / "page-weight.json").write_text(json.dumps({"transferred_bytes": weight, "body_bytes": bodies}))
    print(f"\nconsole first load: {weight} bytes transferred ({bodies} bytes of files)")
    assert 0 < weight < 150_000 and 0 < bodies < 150_000

    # Content-Security-Policy without inline script, on the page and on its files.
    for path in ("/ui", "/ui/collections/x", "/ui/assets/app.js", "/ui/assets/app.css"):
        csp = gw.client.get(path).headers["content-security-policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "unsafe-eval" not in csp, path
    html = gw.client.get("/ui").text
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html), "inline <script>"
    assert not re.search(r"\son[a-z]+\s*=", html), "inline event handler"
    assert gw.client.get("/ui/assets/nope.js").status_code == 404
    assert gw.client.get("/ui/assets/..%2Fapi.js").status_code == 404


def test_create_a_collection(gw, console: Console, state):
    page = console.page
    name = state["collection"]
    page.goto(gw.url + "/ui")
    page.get_by_test_id("collection-name").fill(name)
    page.get_by_test_id("collection-create").click()
    row = page.locator(f"[data-testid=collection][data-name={name}]")
    row.wait_for()
    assert row.get_by_test_id("collection-count").inner_text() == "0"
    console.shot("02-collection-created")
    assert gw.client.get(f"/v1/collections/{name}").status_code == 200
    assert console.errors == []


def test_upload_shows_progress_to_100_and_the_bad_line(gw, console: Console, state, tmp_path):
    page = console.page
    name = state["collection"]
    path, good = ndjson_file(tmp_path)
    page.goto(f"{gw.url}/ui/collections/{name}")  # a deep link
    page.get_by_test_id("collection-summary").wait_for()
    page.get_by_test_id("upload-file").set_input_files(str(path))
    page.wait_for_selector("[data-testid=job-progress][aria-valuenow='100']", timeout=120_000)
    page.wait_for_selector("[data-testid=job-progress][data-status=succeeded]")
    status = page.get_by_test_id("job-status").inner_text()
    assert f"{good} / {good + 1} processed, 1 failed" in status, status
    error = page.get_by_test_id("job-error")
    assert error.count() == 1 and error.get_attribute("data-line") == "4" and "line 4" in error.inner_text()
    page.wait_for_selector(f"[data-testid=collection-summary][data-count='{good}']")
    console.shot("03-upload-done")
    assert gw.client.get(f"/v1/collections/{name}").json()["count"] == good
    assert console.errors == []


def test_documents_page_by_page_and_open_one(gw, console: Console, state):
    page = console.page
    name = state["collection"]
    page.goto(f"{gw.url}/ui/collections/{name}")
    rows = page.locator("[data-testid=document]")
    rows.first.wait_for()
    first = rows.evaluate_all("(rows) => rows.map((r) => r.dataset.id)")
    assert len(first) == 20
    page.get_by_test_id("documents-next").click()
    page.wait_for_function("() => document.querySelector('[data-testid=documents-page]').textContent === 'page 2'")
    second = rows.evaluate_all("(rows) => rows.map((r) => r.dataset.id)")
    assert len(second) == 9 and not set(first) & set(second)
    assert page.get_by_test_id("documents-next").is_disabled()
    page.get_by_test_id("documents-filter").fill("n = 7")
    page.get_by_test_id("documents-filter").press("Enter")
    page.wait_for_function("() => document.querySelectorAll('[data-testid=document]').length === 1")
    rows.first.get_by_test_id("document-open").click()
    detail = page.get_by_test_id("document-detail")
    detail.wait_for()
    assert "Note 7" in detail.inner_text()
    console.shot("04-documents")
    assert console.errors == []


def test_search_with_think_streams_direct_then_think_and_thoughts(gw, console: Console, state):
    page = console.page
    name = state["collection"]
    page.goto(f"{gw.url}/ui/search?collection={name}")
    page.get_by_test_id("search-query").wait_for()
    page.wait_for_selector(f"[data-testid=search-collection] option[value={name}]", state="attached")
    # Record every phase the result list goes through.
    page.evaluate(
        # Both phases may render within one batch of mutations (two SSE events in one chunk): the phases the batch
        # replaced are read from its records (old attribute values, removed lists), then the current one.
        """() => { window.phases = [];
             const push = (p) => { if (p && window.phases.at(-1) !== p) window.phases.push(p); };
             const results = (n) => n.nodeType === 1 &&
               (n.matches('[data-testid=results]') ? n : n.querySelector('[data-testid=results]'));
             new MutationObserver((records) => {
               for (const r of records) {
                 if (r.type === 'attributes' && r.attributeName === 'data-phase') push(r.oldValue);
                 for (const n of r.removedNodes) { const el = results(n); if (el) push(el.dataset.phase); }
               }
               const el = document.querySelector('[data-testid=results]');
               push(el && el.dataset.phase);
             }).observe(document.getElementById('view'),
                        {subtree: true, childList: true, attributes: true, attributeOldValue: true}); }"""
    )
    page.get_by_test_id("search-query").fill(f"what pulls the sea up and down {uuid.uuid4().hex[:6]}")
    page.get_by_test_id("search-think").check()
    page.get_by_test_id("search-submit").click()
    page.wait_for_selector("[data-testid=results][data-phase=think]", timeout=120_000)
    page.wait_for_selector("[data-testid=results][data-done=true]")
    assert page.evaluate("window.phases") == ["direct", "think"]
    assert page.locator("[data-testid=result]").count() > 0
    assert page.locator("[data-testid=result]").first.get_attribute("data-id").startswith("doc-")
    assert page.locator("[data-testid=thought]").count() == N_THOUGHTS
    badge = page.get_by_test_id("mode")
    assert badge.get_attribute("data-mode") == "think" and badge.get_attribute("data-cache") == "miss"
    assert badge.get_attribute("data-degraded") == "false"
    assert float(page.get_by_test_id("timings").get_attribute("data-total")) > 0
    assert page.locator("[data-testid=timings] [data-stage=think]").count() == 1
    # side by side: the direct ranking next to the think one, with what moved
    assert page.locator("[data-testid=direct-result]").count() > 0
    results = page.locator("[data-testid=result]")
    assert results.locator("[data-testid=moved]").count() == results.count()
    assert "q=what+pulls" in page.url  # the URL shares the search
    console.shot("05-search-direct-then-think")

    # The same query again from its deep link: the thought cache answers at once.
    page.goto(page.url)
    page.wait_for_selector("[data-testid=results][data-done=true]", timeout=60_000)
    assert page.get_by_test_id("mode").get_attribute("data-cache") == "hit"
    assert page.locator("[data-testid=thought]").count() == N_THOUGHTS
    assert console.errors == []


def test_search_with_the_worker_paused_shows_the_degraded_reason(gw, vllm, console: Console, state):
    page = console.page
    name = state["collection"]
    page.goto(f"{gw.url}/ui/search?collection={name}")
    page.wait_for_selector(f"[data-testid=search-collection] option[value={name}]", state="attached")
    page.get_by_test_id("search-query").fill(f"why do volcanoes erupt {uuid.uuid4().hex[:6]}")
    page.get_by_test_id("search-think").check()
    page.get_by_test_id("search-deadline").fill("1500")
    vllm.pause()
    try:
        page.get_by_test_id("search-submit").click()
        reason = page.get_by_test_id("degraded")
        reason.wait_for(timeout=60_000)
        assert reason.get_attribute("data-reason") == "deadline"
        assert "missed the deadline" in reason.inner_text()
        assert page.get_by_test_id("mode").get_attribute("data-degraded") == "true"
        assert page.locator("[data-testid=result]").count() > 0  # the direct results stand
        assert page.locator("[data-testid=thought]").count() == 0
        console.shot("06-search-degraded")
    finally:
        vllm.resume()
    assert console.errors == []


def test_health_panel_shows_dependencies_breakers_and_figures(gw, console: Console):
    page = console.page
    page.goto(gw.url + "/ui/health")
    page.wait_for_selector("[data-testid=dependency][data-name=thinker]")
    page.wait_for_selector("[data-testid=figure][data-name=p95]")
    assert page.get_by_test_id("ready-status").inner_text() in ("ready", "degraded")
    names = page.locator("[data-testid=dependency]").evaluate_all("(rows) => rows.map((r) => r.dataset.name)")
    assert {"vector_store", "embedder", "thinker", "thought_cache"} <= set(names)
    assert page.locator("[data-testid=dependency][data-name=thinker] [data-testid=breaker]").inner_text() != "–"
    searches = page.locator("[data-testid=figure][data-name=searches] strong").inner_text()
    assert int(searches) >= 3  # the searches made above
    assert page.locator("[data-testid=figure][data-name=p95] strong").inner_text().endswith("ms")
    assert page.locator("[data-testid=chart] svg path").count() == 2
    console.shot("07-health")
    assert console.errors == []
