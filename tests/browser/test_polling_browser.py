"""The storefront's polling panel with conditional requests, in Debian's Chromium.

The panel sends the ETag of its list in ``If-None-Match``: while nothing the list
depends on moves, the API answers 304 and the panel keeps its list (and the
``rec_id`` its links carry); a view in another tab changes it within 2 s.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from api.services import ApiServices, conditional_recs
from online_models.serving.popularity import PopularitySnapshot
from tests.browser.conftest import LiveServer
from tests.browser.test_storefront_browser import (  # noqa: F401  (shop: a fixture)
    panel_ids,
    shop,
    signup,
)
from tests.fakes import use_popularity

pytestmark = pytest.mark.browser

#: The most a view in another tab may take to show in the panel.
CHANGE_WITHIN_MS = 2_000


@pytest.fixture
def polling_shop(shop: tuple[LiveServer, ApiServices]  # noqa: F811  (the fixture)
                 ) -> tuple[LiveServer, ApiServices]:
    """The storefront on fakes that apply each event at once, with popularity epochs of
    60 s: during the test only the shopper's own events change their list."""
    _, services = shop
    use_popularity(services.recommender, PopularitySnapshot(
        services.state, services.catalog, refresh_s=60.0))
    services.conditional = conditional_recs(services.settings, services.state,
                                            services.recommender, services.replica)
    return shop


def panel_links(page: Any) -> list[str]:
    links: list[str] = page.eval_on_selector_all(
        "#recommended-items .card a", "links => links.map(a => a.getAttribute('href'))")
    return links


def test_the_panel_keeps_its_list_on_304s_and_changes_within_2_s_of_a_view_elsewhere(
    browser: Any, polling_shop: tuple[LiveServer, ApiServices]
) -> None:
    server, _ = polling_shop
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(10_000)
    page = context.new_page()
    signup(page, server.url, "polly", "password-1")
    page.wait_for_url(f"{server.url}/")
    for n in (1, 2, 3):
        page.goto(f"{server.url}/product/candles-{n}")
    page.goto(f"{server.url}/")
    page.wait_for_selector("#recommended[data-mode=recommender]")
    page.evaluate("window.__sameDocument = true")
    page.wait_for_function(  # the first poll gets the list and its tag, then come 304s
        "() => Number(document.querySelector('#recommended').dataset.notModified) >= 1")
    before, links = panel_ids(page), panel_links(page)
    assert before and all("?rec=" in link for link in links)
    page.wait_for_function(
        "() => Number(document.querySelector('#recommended').dataset.notModified) >= 3",
        timeout=8_000)
    assert panel_ids(page) == before and panel_links(page) == links  # same list, same rec_id

    # Another tab of the same shopper views an item the panel shows: it must go.
    other = context.new_page()
    other.goto(f"{server.url}/product/{before[0]}")
    viewed = time.monotonic()
    page.wait_for_function(
        "ids => { const now = Array.from(document.querySelectorAll('#recommended-items .card'))"
        ".map(c => c.dataset.itemId); return now.join() !== ids.join(); }",
        arg=before, timeout=CHANGE_WITHIN_MS)
    elapsed = time.monotonic() - viewed
    assert before[0] not in panel_ids(page)
    assert panel_links(page)[0].split("?rec=")[1] != links[0].split("?rec=")[1]  # new rec_id
    assert page.evaluate("window.__sameDocument") is True  # no reload
    print(f"panel changed {elapsed:.2f} s after the view in the other tab")
    context.close()
