"""A real browser on the real app: Debian's Chromium, driven by Playwright, against tiny random models."""
from __future__ import annotations

from clipdiff.sampling import DEFAULT_STEPS
from clipdiff.testing.browser import wait_for_text


def test_type_generate_see_image_then_scrub_the_playback(live_app, page, tmp_path):
    page.goto(live_app.url)
    page.get_by_role("tab", name="Generate").click()     # the Tour tab opens first
    page.fill("#prompts textarea", "A deep red rose flower")
    wait_for_text(page, "#token-summary", "/ 77")       # the live token view followed the typing
    page.click("#generate")
    wait_for_text(page, "#status", "Done")
    assert page.locator("#gallery img").count() == 2   # two images per prompt by default

    page.get_by_role("tab", name="Denoising playback").click()
    frame = page.locator("#pb-frame img")
    frame.wait_for()
    opening = frame.get_attribute("src")
    third = round((DEFAULT_STEPS - 1) / 3) + 1          # it opens a third of the way in, not on the finished image
    assert f"Recorded step {third} of {DEFAULT_STEPS}" in page.inner_text("#pb-caption")
    assert not page.locator("#pb-hint").is_visible(), "the hint to generate first is gone once a run exists"
    page.focus("#pb-step input[type=range]")
    page.keyboard.press("Home")                         # back to the first recorded step: pure noise
    page.wait_for_function("src => document.querySelector('#pb-frame img').src !== src", arg=opening)
    wait_for_text(page, "#pb-caption", f"Recorded step 1 of {DEFAULT_STEPS}")
    page.screenshot(path=str(tmp_path / "playback.png"), full_page=True)
    assert (tmp_path / "playback.png").stat().st_size > 10_000
