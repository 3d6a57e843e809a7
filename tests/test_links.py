"""Share links: a run's settings as the page URL's query, read back with the checks of any request; and in a real
browser, a link opened in a fresh page makes the same first image as the run that made it."""
from __future__ import annotations

import io
from urllib.parse import parse_qsl, urlparse

import numpy as np
import pytest

gr = pytest.importorskip("gradio")

from clipdiff.app.links import controls_from_query, link_query  # noqa: E402
from clipdiff.testing.browser import open_tab, wait_for_text  # noqa: E402


def query_of(link: str) -> dict:
    return dict(parse_qsl(urlparse(link).query))


def test_a_link_carries_every_setting_and_reads_back_as_the_same_controls():
    link = link_query("a rose\n[a daisy:a sunflower:0.5]", " red ", 2.5, 12, "ddim", 7, 2)
    assert link.startswith("?") and "seed=7" in link
    assert controls_from_query(query_of(link)) == ("a rose\n[a daisy:a sunflower:0.5]", 2.5, 12, "ddim", 7, 2, "red")
    assert link_query("", "", 2.0, 12, "ddim", 1, 1) == "", "no prompt, no link"
    assert "negative" not in link_query("a rose", "", 2.0, 12, "ddim", 1, 1), "no negative, no key"


def test_a_link_is_checked_like_any_request():
    skip = gr.skip()
    prompts, w, steps, sampler, seed, n, negative = controls_from_query(
        {"prompt": "x\x00\n" + "y\n" * 50, "w": "99", "steps": "nan", "sampler": "<script>", "seed": "-5", "n": "3",
         "negative": "a\nb", "other": "ignored"})
    assert prompts == "\n".join(["x"] + ["y"] * 7), "control characters dropped, at most 8 prompts"
    assert (w, seed, n) == (10.0, 0, 3), "clamped to the app's bounds"
    assert steps == skip and sampler == skip, "unusable values leave their control as it is"
    assert negative == "a b"
    assert controls_from_query({}) == (skip,) * 7, "a plain URL changes nothing"
    assert controls_from_query({"w": "1"}) == (skip,) * 7, "no prompt: not a share link"
    assert controls_from_query({"prompt": ["a", "b"]}) == (skip,) * 7, "only text values"


def first_image(page) -> np.ndarray:
    from PIL import Image

    src = page.locator("#gallery img").first.get_attribute("src")
    body = page.request.get(src if src.startswith("http") else page.url.split("?")[0].rstrip("/") + src).body()
    with Image.open(io.BytesIO(body)) as im:
        return np.asarray(im.convert("RGB")).astype(int)


def test_a_share_link_opened_in_a_fresh_page_makes_the_same_first_image(live_app, page):
    page.goto(live_app.url)
    open_tab(page, "Generate")
    page.fill("#prompts textarea", "A deep red rose flower")
    page.fill("#negative textarea", "white")
    seed = page.get_by_label("seed (the seed used is shown here)")
    seed.fill("31")
    seed.press("Tab")
    page.click("#generate")
    wait_for_text(page, "#status", "Done")
    page.wait_for_function("() => document.querySelector('#share-link textarea')?.value.startsWith('http')")
    link = page.input_value("#share-link textarea")
    assert link.startswith(live_app.url.rstrip("/")) and query_of(link)["seed"] == "31"
    made = first_image(page)

    fresh = page.context.browser.new_page(viewport={"width": 1280, "height": 1200})
    try:
        fresh.goto(link)
        open_tab(fresh, "Generate")
        fresh.wait_for_function("() => document.querySelector('#negative textarea')?.value === 'white'")
        assert fresh.input_value("#prompts textarea") == "A deep red rose flower"
        fresh.click("#generate")
        wait_for_text(fresh, "#status", "Done")
        assert "seed 31" in fresh.inner_text("#status")
        assert np.abs(first_image(fresh) - made).max() <= 1, "the same first image"
    finally:
        fresh.close()
