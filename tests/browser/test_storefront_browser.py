"""The storefront in Debian's Chromium (Playwright): shopping, refusals and the live panel.

Two set-ups: fake services whose publisher applies each event at once (fast and
deterministic), and the real path (Kafka protocol broker -> consumers -> Redis)
that also takes the README screenshots on the shipped catalog.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from api import create_app
from api.services import ApiServices
from core.events import InteractionEvent
from core.settings import Settings
from online_models.processor import StreamProcessor
from online_models.profile import ContentProfile
from tests.browser.conftest import LiveServer
from tests.fakes import RecordingPublisher, toy_accounts, toy_services
from tests.integration.conftest import (  # noqa: F401  (fixtures used by the real-path test)
    index_state_dir,
    live_settings,
    running_consumer,
)

pytestmark = pytest.mark.browser

#: The panel polls every 1.5 s; a change must show within a couple of polls.
PANEL_WAIT_MS = 4_000
#: On real services the broker, the consumer and a busy 2-core machine add their share.
LIVE_PANEL_WAIT_MS = 8_000


class ApplyingPublisher(RecordingPublisher):
    """Records events and applies them to the state store at once (a synchronous stream)."""

    def __init__(self, processor: StreamProcessor) -> None:
        super().__init__()
        self.processor = processor

    def publish(self, events: Sequence[InteractionEvent]) -> None:
        super().publish(events)
        self.processor.apply(events)


@pytest.fixture
def shop(tmp_path: Path) -> Iterator[tuple[LiveServer, ApiServices]]:
    settings = Settings(redis_url="redis://fake", kafka_bootstrap="fake:9092",
                        secret_key="browser-test-secret", data_dir=tmp_path,
                        state_dir=tmp_path)
    services = toy_services(settings, accounts=toy_accounts(f"sqlite:///{tmp_path}/acc.db"))
    services.publisher = ApplyingPublisher(StreamProcessor(
        services.state, services.index,
        {i: it.category for i, it in services.catalog.items()},
        half_life_s=3600.0, profile=ContentProfile(0.3)))
    app = create_app(settings, services=services)
    with LiveServer(app) as server:
        yield server, services


def panel_ids(page: Any) -> list[str]:
    ids: list[str] = page.eval_on_selector_all(
        "#recommended-items .card", "cards => cards.map(c => c.dataset.itemId)")
    return ids


def signup(page: Any, url: str, username: str, password: str,
           categories: Sequence[str] = ()) -> None:
    page.goto(f"{url}/signup")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", password)
    page.fill("input[name=password2]", password)
    for category in categories:
        page.check(f"input[name=categories][value='{category}']")
    page.click("form.account-form button[type=submit]")


def test_a_shopper_signs_up_searches_buys_rates_and_sees_the_panel_change_live(
    browser: Any, shop: tuple[LiveServer, ApiServices]
) -> None:
    server, services = shop
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(10_000)
    page = context.new_page()
    signup(page, server.url, "alice", "password-1", ["Bags"])
    page.wait_for_url(f"{server.url}/")
    assert page.text_content("#profile-link") == "alice"
    # Cold start: the preferred category fills the panel.
    assert page.get_attribute("#recommended", "data-mode") == "interests"
    assert all(i.startswith("bags-") for i in panel_ids(page))

    page.fill("input[name=q]", "candel")
    page.press("input[name=q]", "Enter")
    page.wait_for_url(re.compile(r"/search\?q=candel"))
    assert "candles" in page.text_content("#corrected")
    page.click("#results .card >> nth=3")
    page.wait_for_url(re.compile(r"/product/candles-"))
    product = page.url.rsplit("/", 1)[1]
    assert page.is_visible("img.picture")

    page.fill("input[name=quantity]", "2")
    page.click("#add-to-cart")
    page.wait_for_url(f"{server.url}/cart")
    assert page.text_content("#cart-total") == "£" + f"{2 * services.catalog[product].price:.2f}"
    page.click("#checkout")
    page.wait_for_url(re.compile(r"/profile"))
    assert "Order #1 is confirmed" in page.text_content(".flash")

    page.goto(f"{server.url}/product/{product}")
    page.check("input[name=rating][value='5']")
    page.fill("textarea[name=review]", "Smells lovely")
    with page.expect_navigation():  # back to the same product page
        page.click("#rate-submit")
    assert "5.0 / 5 from 1 rating" in page.text_content("#rating-summary")
    assert "Smells lovely" in page.text_content(".review-list")

    # Home: personal recommendations now follow the candles bought and rated.
    page.goto(f"{server.url}/")
    page.wait_for_selector("#recommended[data-mode=recommender]")
    before = panel_ids(page)
    assert before and before[0].startswith("candles-")
    assert "Similar to what you viewed" in page.text_content("#recommended-items")
    page.evaluate("window.__sameDocument = true")

    # Another tab of the same shopper looks at mugs; the first tab updates by itself.
    other = context.new_page()
    for n in (1, 2, 3, 4, 5, 6):
        other.goto(f"{server.url}/product/mugs-{n}")
    other.click("#add-to-cart")
    page.wait_for_function(
        "() => Array.from(document.querySelectorAll('#recommended-items .card'))"
        ".some(c => c.dataset.itemId.startsWith('mugs-'))", timeout=PANEL_WAIT_MS)
    assert page.evaluate("window.__sameDocument") is True  # no reload happened
    assert panel_ids(page) != before
    assert int(page.get_attribute("#recommended", "data-updates") or 0) >= 1
    context.close()

    kinds = [e.event_type for e in services.publisher.events]  # type: ignore[attr-defined]
    assert {"view", "add_to_cart", "purchase", "rating"} <= set(kinds)


def test_wrong_password_duplicate_signup_and_missing_csrf_token_are_refused(
    browser: Any, shop: tuple[LiveServer, ApiServices]
) -> None:
    server, _ = shop
    context = browser.new_context()
    context.set_default_timeout(10_000)
    page = context.new_page()
    signup(page, server.url, "bob", "password-1")
    page.wait_for_url(f"{server.url}/")
    with page.expect_navigation():
        page.click("nav.account button")  # log out (we are on "/" already)
    page.wait_for_selector("nav.account a[href='/login']")

    page.goto(f"{server.url}/login")
    page.fill("input[name=username]", "bob")
    page.fill("input[name=password]", "not-my-password")
    page.click("form.account-form button[type=submit]")
    assert page.text_content(".error") == "Wrong username or password."
    assert page.is_visible("text=Sign up")

    signup(page, server.url, "BOB", "password-2")
    assert "That username is taken" in page.text_content(".error")

    page.goto(f"{server.url}/login")
    page.eval_on_selector("input[name=csrf_token]", "el => el.remove()")
    page.fill("input[name=username]", "bob")
    page.fill("input[name=password]", "password-1")
    with page.expect_response(f"{server.url}/login") as answer:
        page.click("form.account-form button[type=submit]")
    assert answer.value.status == 400
    assert "security token is missing" in page.text_content(".error")
    page.goto(f"{server.url}/")
    assert not page.is_visible("#profile-link")  # the forged log-in did not happen
    context.close()


# --- the real path: Kafka protocol broker -> consumers -> Redis ------------------------------
@pytest.fixture
def live_app(live_settings: Settings, running_consumer: object) -> Iterator[Flask]:  # noqa: F811
    app = create_app(live_settings)
    yield app
    app.extensions["streamrec"].close()


@pytest.mark.integration
@pytest.mark.slow
def test_on_real_services_the_panel_changes_without_reload_and_screenshots_are_taken(
    browser: Any, live_app: Flask, screenshots_dir: Path
) -> None:
    catalog = live_app.extensions["streamrec"].catalog
    with LiveServer(live_app) as server:
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        context.set_default_timeout(15_000)
        home = context.new_page()
        signup(home, server.url, "demo", "password-1", ["Candle & Rose"])
        home.wait_for_url(f"{server.url}/")
        home.evaluate("window.__sameDocument = true")
        before = panel_ids(home)

        # Browse in a second tab: candle holders, through the search box.
        shop = context.new_page()
        shop.goto(f"{server.url}/search?q=candle+holder")
        shop.screenshot(path=str(screenshots_dir / "search.png"))
        links = shop.eval_on_selector_all(
            "#results .card a", "links => links.slice(0, 4).map(a => a.getAttribute('href'))")
        assert len(links) == 4
        # The first tab's panel turns to what was viewed, through Kafka, the consumer and
        # Redis, within a couple of seconds and without a reload.
        started = time.monotonic()
        shop.goto(server.url + links[0])
        home.wait_for_function(
            "() => document.querySelector('#recommended').dataset.mode === 'recommender' && "
            "document.querySelector('#recommended-items').textContent"
            ".includes('Similar to what you viewed')", timeout=LIVE_PANEL_WAIT_MS)
        elapsed = time.monotonic() - started
        assert home.evaluate("window.__sameDocument") is True
        assert panel_ids(home) != before
        print(f"panel updated {elapsed:.1f} s after opening the product, without a reload")

        for n, href in enumerate(links[1:]):
            shop.goto(server.url + href)
            if n % 2 == 0:
                shop.click("#add-to-cart")
                shop.wait_for_url(f"{server.url}/cart")
        shop.goto(f"{server.url}/cart")
        shop.screenshot(path=str(screenshots_dir / "cart.png"))
        viewed = {href.split("/")[2].split("?")[0] for href in links}
        home.wait_for_function(  # the panel drops what was viewed since
            "ids => !Array.from(document.querySelectorAll('#recommended-items .card'))"
            ".some(c => ids.includes(c.dataset.itemId))", arg=sorted(viewed),
            timeout=LIVE_PANEL_WAIT_MS)
        after = panel_ids(home)
        assert after and home.evaluate("window.__sameDocument") is True
        assert sum("candle" in catalog[i].name.lower() or "holder" in catalog[i].name.lower()
                   for i in after) >= len(after) // 2
        home.wait_for_timeout(1_600)  # let the highlight fade for the screenshot
        home.screenshot(path=str(screenshots_dir / "home.png"))

        product = context.new_page()
        product.goto(server.url + links[0])
        product.check("input[name=rating][value='5']")
        product.fill("textarea[name=review]", "Lovely light, arrived quickly.")
        product.click("#rate-submit")
        product.wait_for_selector("text=Thank you for your rating.")
        product.goto(server.url + links[0].split("?")[0])
        product.screenshot(path=str(screenshots_dir / "product.png"), full_page=True)
        context.close()
