"""One headless Chromium for the whole package; each test gets its own browser contexts.

Launching Chromium (and Playwright's driver) costs about 2 s of CPU per test; the tests share one
browser on the package's event loop (`pytestmark` in test_dashboard.py runs them there), and each
test's pages live in contexts of their own, closed after it, so no page, cookie or storage of one
test reaches the next."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest_asyncio

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


class TestBrowser:
    """One test's view of the shared browser: `new_page` opens a page in a new context of its own."""

    __test__ = False  # not a test class

    def __init__(self, browser: Any) -> None:
        self._browser = browser
        self._contexts: list[Any] = []

    async def new_page(self, **options: Any) -> Any:
        """A page in a fresh context (the options of Browser.new_page: viewport, accept_downloads …)."""
        context = await self._browser.new_context(**options)
        self._contexts.append(context)
        return await context.new_page()

    async def close(self) -> None:
        """Close every context (and page) this test opened."""
        for context in self._contexts:
            await context.close()
        self._contexts.clear()


@pytest_asyncio.fixture(scope="package", loop_scope="package")
async def chromium() -> AsyncIterator[Any]:
    """Headless Debian Chromium through Playwright (never `playwright install`), once per package."""
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        b = await pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            yield b
        finally:
            await b.close()


@pytest_asyncio.fixture(loop_scope="package")
async def browser(chromium: Any) -> AsyncIterator[TestBrowser]:
    """The shared browser, with this test's contexts closed after it."""
    view = TestBrowser(chromium)
    try:
        yield view
    finally:
        await view.close()
