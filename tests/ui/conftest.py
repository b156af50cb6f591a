"""Browser fixtures: Debian's chromium driven by PyPI playwright (its own browser download cannot work here).

Skipped with a message where /usr/bin/chromium or playwright is missing (never counted as passed). Screenshots go
under the session's pytest temp folder, `<basetemp>/ui-screenshots/`, never into the tree.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pytest

CHROMIUM = os.environ.get("UI_CHROMIUM", "/usr/bin/chromium")


@pytest.fixture(scope="session")
def browser() -> Iterator[object]:
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM}: install Debian's `chromium` (.ci/run does) to run the console tests")
    playwright_api = pytest.importorskip("playwright.sync_api", reason="PyPI playwright (the dev extra) is missing")
    with playwright_api.sync_playwright() as p:
        # --no-sandbox: the tests run as root in a container, where Chromium's sandbox cannot start.
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        yield browser
        browser.close()


@pytest.fixture(scope="session")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.getbasetemp() / "ui-screenshots"
    folder.mkdir(exist_ok=True)
    return folder


@dataclass
class Console:
    """A tab with what it logged: console errors, uncaught page errors, and every response (for the page weight)."""

    page: object
    shots: Path
    errors: list[str] = field(default_factory=list)
    responses: list[tuple[str, int, int]] = field(default_factory=list)  # (url, status, body bytes)

    def shot(self, name: str) -> Path:
        path = self.shots / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path


@pytest.fixture
def console(browser, shots) -> Iterator[Console]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(30_000)
    tab = Console(page, shots)
    page.on("console", lambda m: m.type == "error" and tab.errors.append(m.text))
    page.on("pageerror", lambda e: tab.errors.append(f"uncaught: {e}"))

    def record(response) -> None:
        # The console's own files only: reading an API body here (a stream) would wait for its end.
        if not urlsplit(response.url).path.startswith("/ui") or response.status != 200:
            return
        tab.responses.append((response.url, response.status, len(response.body())))

    page.on("response", record)
    yield tab
    context.close()
