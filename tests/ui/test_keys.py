"""The console with API_KEYS set, in a real Chromium: the page itself needs no key; with none it asks for one, a
wrong key is a readable 401, a key without the scope a readable 403, and the key stays in the tab
(sessionStorage), never in a cookie or the URL. Real MiniLM, embedded Qdrant, no thought worker."""

from __future__ import annotations

import pytest

from service.settings import Settings
from tests.support.gateway import Gateway
from tests.ui.conftest import Console

ADMIN = "ui-admin-key-5c1e"
SEARCHER = "ui-search-key-0b7d"


@pytest.fixture(scope="module")
def gw():
    settings = Settings(_env_file=None, qdrant_path=":memory:", api_keys={ADMIN: ["admin"], SEARCHER: ["search"]})
    with Gateway(settings) as gateway:
        yield gateway


def expected_refusals(errors: list[str]) -> list[str]:
    """Console errors other than Chromium's own line for the 401/403 answers this test asks for."""
    return [e for e in errors if "status of 401" not in e and "status of 403" not in e]


def test_page_is_open_but_asks_for_a_key_and_explains_401_and_403(gw, console: Console):
    page = console.page
    for path in ("/ui", "/ui/search", "/ui/assets/app.js"):
        assert gw.client.get(path).status_code == 200, path  # no key needed for the page itself
    assert gw.client.get("/v1/collections").status_code == 401

    page.goto(gw.url + "/ui")
    prompt = page.get_by_test_id("key-prompt")
    prompt.wait_for()
    banner = page.get_by_test_id("error")
    banner.wait_for()
    assert banner.get_attribute("data-status") == "401"
    assert "needs an API key" in banner.inner_text()
    console.shot("08-key-prompt")

    page.get_by_test_id("key-input").fill("not-a-key")
    page.get_by_test_id("key-submit").click()
    page.wait_for_function("() => document.querySelector('[data-testid=error]').textContent.includes('refused')")
    assert banner.get_attribute("data-status") == "401"
    assert "401 Unauthorized: the API key was refused" in banner.inner_text()
    assert prompt.is_visible()
    console.shot("09-key-wrong-401")

    page.get_by_test_id("key-input").fill(SEARCHER)
    page.get_by_test_id("key-submit").click()
    page.get_by_test_id("collections").wait_for()
    page.wait_for_function("() => document.querySelector('[data-testid=error]').hidden")
    assert not prompt.is_visible()
    # A search key cannot create a collection: a readable 403.
    page.get_by_test_id("collection-name").fill("made_by_searcher")
    page.get_by_test_id("collection-create").click()
    page.wait_for_function("() => !document.querySelector('[data-testid=error]').hidden")
    assert banner.get_attribute("data-status") == "403"
    assert "403 Forbidden: your key may not do this" in banner.inner_text() and "admin" in banner.inner_text()
    console.shot("10-key-403")

    page.get_by_test_id("key-button").click()
    page.get_by_test_id("key-input").fill(ADMIN)
    page.get_by_test_id("key-submit").click()
    page.get_by_test_id("collection-name").fill("made_by_admin")
    page.get_by_test_id("collection-create").click()
    page.locator("[data-testid=collection][data-name=made_by_admin]").wait_for()
    console.shot("11-key-accepted")

    # The key is the tab's only: sessionStorage, not a cookie, not the URL; sent as a bearer token.
    assert page.evaluate("sessionStorage.getItem('thinksearch.apiKey')") == ADMIN
    assert page.context.cookies() == [] and page.evaluate("document.cookie") == ""
    assert ADMIN not in page.url
    fresh = page.context.browser.new_context()
    try:
        other = fresh.new_page()
        other.goto(gw.url + "/ui")
        other.get_by_test_id("key-prompt").wait_for()  # another tab (context) has no key
    finally:
        fresh.close()
    assert expected_refusals(console.errors) == []
