"""Debian's Chromium driven by Playwright: the browser tests' page, and the one screenshots are taken with."""
from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Iterator

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--no-first-run", "--disable-sync"]


def have_chromium() -> bool:
    return os.path.exists(CHROMIUM)


@contextmanager
def chromium_page(width: int = 1280, height: int = 1200, timeout_ms: int = 60_000) -> Iterator[object]:
    """A fresh headless Chromium with one page of this viewport, closed on exit."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            page.set_default_timeout(timeout_ms)
            yield page
        finally:
            browser.close()


def wait_for_text(page, selector: str, text: str) -> None:
    page.wait_for_function("([s, t]) => (document.querySelector(s)?.innerText || '').includes(t)", arg=[selector, text])
