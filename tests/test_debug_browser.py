"""Debugging a prompt in a real browser (Chromium through Playwright, tiny random models): a negative prompt typed
into Generate reaches the PNG, the switch strip lands in the playback with its switch marked, and word importance
shades the prompt's words."""
from __future__ import annotations

from clipdiff.testing.browser import open_tab, wait_for_text


def test_negative_prompt_switch_strip_and_word_importance_in_the_page(live_app, page, tmp_path):
    page.goto(live_app.url)
    open_tab(page, "Generate")
    page.fill("#prompts textarea", "[A round white daisy:An orange sunflower:0.5]")
    page.fill("#negative textarea", "red")
    page.click("#generate")
    wait_for_text(page, "#status", "Done")
    assert page.locator("#gallery img").count() == 2

    open_tab(page, "Debug a prompt")
    page.fill("#pe-fractions textarea", "0, 0.5, 1")
    page.click("#pe-go")
    wait_for_text(page, "#pe-status", "Done")
    page.locator("#pe-strip img").wait_for()
    open_tab(page, "Denoising playback")
    page.wait_for_function("() => document.querySelectorAll('#pb-sample input').length > 0")
    wait_for_text(page, "#pb-caption", "Recorded step")

    open_tab(page, "Debug a prompt")
    page.fill("#wi-prompt textarea", "a red rose")
    page.click("#wi-go")
    wait_for_text(page, "#wi-status", "Done")
    page.locator("#wi-strip img").wait_for()
    wait_for_text(page, "#wi-words", "red")
    errors = page.locator(".toast-body.error").all_inner_texts()
    page.screenshot(path=str(tmp_path / "debug.png"), full_page=True)
    assert errors == []
