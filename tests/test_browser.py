"""A real browser on the real app: Debian's Chromium, driven by Playwright, against tiny random models."""
from __future__ import annotations

import os

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--no-first-run", "--disable-sync"]

if not os.path.exists(CHROMIUM):
    pytest.skip(f"{CHROMIUM} is not installed (apt-get install -y chromium)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api")

from clipdiff.pipeline import DEFAULT_STEPS  # noqa: E402
from test_app import start_app, tiny_atlas_dir  # noqa: E402,F401  (the atlas fixture is shared)


@pytest.fixture(scope="module")
def app_url(tiny_clip_dir, tiny_unet_dir, tiny_atlas_dir):  # noqa: F811
    demo, url = start_app(tiny_clip_dir, tiny_unet_dir, tiny_atlas_dir)
    yield url
    demo.close()


@pytest.fixture
def page():
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 1200})
        page.set_default_timeout(60_000)
        yield page
        browser.close()


def wait_for_text(page, selector: str, text: str) -> None:
    page.wait_for_function("([s, t]) => (document.querySelector(s)?.innerText || '').includes(t)", arg=[selector, text])


def test_type_generate_see_image_then_scrub_the_playback(app_url, page, tmp_path):
    page.goto(app_url)
    page.get_by_role("tab", name="Generate").click()     # the Tour tab opens first
    page.fill("#prompts textarea", "A deep red rose flower")
    wait_for_text(page, "#token-summary", "/ 77")       # the live token view followed the typing
    page.click("#generate")
    wait_for_text(page, "#status", "Done")
    assert page.locator("#gallery img").count() == 2   # two images per prompt by default

    page.get_by_role("tab", name="Denoising playback").click()
    frame = page.locator("#pb-frame img")
    frame.wait_for()
    last_step = frame.get_attribute("src")
    assert f"Recorded step {DEFAULT_STEPS} of {DEFAULT_STEPS}" in page.inner_text("#pb-caption")
    page.focus("#pb-step input[type=range]")
    page.keyboard.press("Home")                         # back to the first recorded step: pure noise
    page.wait_for_function("src => document.querySelector('#pb-frame img').src !== src", arg=last_step)
    wait_for_text(page, "#pb-caption", f"Recorded step 1 of {DEFAULT_STEPS}")
    page.screenshot(path=str(tmp_path / "playback.png"), full_page=True)
    assert (tmp_path / "playback.png").stat().st_size > 10_000
