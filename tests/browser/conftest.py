"""Fixtures of the browser tests: one Chromium for this package, a fresh page per test.

Package scope, not session: Playwright's sync API runs an event loop in the test thread while
it is started, and every asyncio test after this package needs that thread's loop free."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.browser.playwright_helpers import WINDOW, chromium_path, launched


@pytest.fixture(scope="package")
def browser() -> Iterator[Any]:
    if chromium_path() is None:
        pytest.skip("headless Chromium is not installed: run `make chromium` (Debian `chromium`)")
    with launched() as browser:
        yield browser


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport=WINDOW, accept_downloads=True)
    page = context.new_page()
    try:
        yield page
    finally:
        context.close()
