"""Browser tests: Playwright driving Debian's Chromium (headless) against a live server.

Playwright's own browser download does not work on these machines, so the tests
launch ``/usr/bin/chromium`` (``STREAMREC_TEST_CHROMIUM`` overrides the path). The
app under test is served by werkzeug in a thread on a free loopback port.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from werkzeug.serving import BaseWSGIServer, make_server

from infra.embedded import free_port

CHROMIUM = os.environ.get("STREAMREC_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-quic",
    "--no-first-run", "--disable-component-update", "--disable-sync",
]
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"


class LiveServer:
    """A Flask app served on 127.0.0.1 in a background thread."""

    def __init__(self, app: Flask) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server: BaseWSGIServer = make_server("127.0.0.1", self.port, app, threaded=True)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.thread.join(5)


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    """A headless Chromium; the test fails (never skips) when it cannot start.

    Module-scoped: Playwright's sync API keeps an event loop running on the main
    thread while it is open, which would break ``asyncio.run`` in later tests.
    """
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail(f"Chromium not found at {CHROMIUM}: install Debian's `chromium` package")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        yield launched
        launched.close()


@pytest.fixture
def page(browser: object) -> Iterator[object]:
    """A fresh browser context (own cookies) and page, closed after the test."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})  # type: ignore[attr-defined]
    context.set_default_timeout(10_000)
    new_page = context.new_page()
    yield new_page
    context.close()


@pytest.fixture
def screenshots_dir(tmp_path: Path) -> Path:
    """Where the browser tests save their screenshots: docs/screenshots when
    ``STREAMREC_UPDATE_SCREENSHOTS=1`` (to refresh the README's pictures), else a
    temporary folder, so a test run leaves the working tree as it was."""
    if os.environ.get("STREAMREC_UPDATE_SCREENSHOTS") == "1":
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        return SCREENSHOTS
    return tmp_path
