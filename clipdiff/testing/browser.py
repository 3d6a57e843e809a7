"""Debian's Chromium driven by Playwright: the browser tests' page, and the one screenshots are taken with."""
from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Iterator

CHROMIUM = "/usr/bin/chromium"
LAPTOP = (1280, 800)      # an attendee's laptop screen: what the app is laid out for
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


ERROR_MARKS_JS = """() => [...document.querySelectorAll('span, div, p')].filter(e => e.children.length === 0
  && e.textContent.trim() === 'Error' && !e.closest('.toast-wrap, [class*=toast]')).length"""


def error_marks(page) -> int:
    """Gradio's red "Error" marks on components (a failed event's outputs), toasts aside."""
    return page.evaluate(ERROR_MARKS_JS)


def in_view(page, selector: str) -> bool:
    """Whether the element is wholly inside the viewport (it need not be scrolled to)."""
    box = page.locator(selector).first.bounding_box()
    size = page.viewport_size
    return box is not None and box["y"] >= 0 and box["x"] >= 0 and box["y"] + box["height"] <= size["height"] \
        and box["x"] + box["width"] <= size["width"]


def set_number(page, label: str, value) -> None:
    """Type a value into a slider's number box (by the slider's label) and commit it: the shown one, where tabs
    visited before have sliders of the same name."""
    box = page.locator(f"input[aria-label='number input for {label}']:visible")
    box.fill(str(value))
    box.press("Enter")


PHONE = (390, 844)        # a phone held upright: the narrowest screen the page is checked at


def tab_names(page) -> list[str]:
    """Every tab's name, in order, those under "More tabs" included (Gradio keeps a hidden row of them all, to
    measure which fit)."""
    return [t.strip() for t in page.locator(".tab-container[aria-hidden=true] button").all_inner_texts()]


def open_tab(page, name: str) -> None:
    """Click a tab by its name and wait until it is the selected one. On a narrow screen Gradio lists the tabs that
    do not fit under its "More tabs" button: the tab is picked from there."""
    page.get_by_role("tab", selected=True).wait_for()       # the tabs are drawn (and measured)
    tab = page.get_by_role("tab", name=name, exact=True)
    if tab.count() and tab.is_visible():
        tab.click()
    else:
        page.get_by_role("button", name="More tabs").click()
        page.locator(".overflow-dropdown button").get_by_text(name, exact=True).click()
    page.get_by_role("tab", name=name, exact=True, selected=True).wait_for()


def pin_runs(page, count: int) -> None:
    """In the Compare runs tab: wait until `count` runs are listed (a run is listed once its follow-ups are done,
    after its status says Done), tick the first `count`, and wait until they are shown side by side."""
    open_tab(page, "Compare runs")
    page.wait_for_function("(n) => document.querySelectorAll('#runs input[type=checkbox]').length === n", arg=count)
    boxes = page.locator("#runs input[type=checkbox]")
    for k in range(count):
        boxes.nth(k).check()
    page.wait_for_function("(n) => document.querySelectorAll('.compare-run').length === n", arg=count)
