"""Fixtures of the browser tests of the explorer page (single-latent, class-conditional and
hierarchical models): one headless Chromium per module and a fresh page per test."""

import pytest

from helpers.headless_chromium import Recorder, chromium, require_browser


@pytest.fixture(scope="module")
def browser():
    require_browser()
    with chromium() as b:
        yield b


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1300, "height": 1000})
    page = context.new_page()
    page.rec = Recorder(page)
    page.set_default_timeout(30_000)
    yield page
    context.close()
