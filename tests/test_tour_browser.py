"""The Tour tab in a real browser: every tour button lands on its tab with a freshly rendered result."""
from __future__ import annotations

import os

import pytest

from clipdiff import tour

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--no-first-run", "--disable-sync"]

if not os.path.exists(CHROMIUM):
    pytest.skip(f"{CHROMIUM} is not installed (apt-get install -y chromium)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api")

from test_app import start_app, tiny_atlas_dir  # noqa: E402,F401  (the atlas fixture is shared)

TAB_NAMES = {"generate": "Generate", "sweep": "Guidance sweep", "playback": "Denoising playback",
             "similarity": "Similarity", "map": "Embedding map", "interpolate": "Interpolate and vary"}
RESULTS = {"generate": "#gallery", "sweep": "#sweep-grid", "playback": "#pb-frame", "similarity": "#similarity-plot",
           "map": "#map-plot", tour.Interpolate: "#ip-strip", tour.Mix: "#mix-strip", tour.Vary: "#va-gallery"}
RENDERED = "img, .js-plotly-plot .main-svg"   # a picture, or a drawn Plotly figure

# What the result element shows now: its pictures' addresses and its plot's text. A new result changes it.
SIGNATURE_JS = """sel => { const c = document.querySelector(sel); if (!c) return '';
  return [...c.querySelectorAll('img')].map(i => i.src).join('|') + '#' + c.textContent; }"""
BUSY_JS = "() => document.querySelectorAll('.generating, .pending, .eta-bar').length"   # Gradio's status trackers


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


def result_of(run: tour.Run) -> str:
    return RESULTS.get(type(run.then)) or RESULTS[run.tab]


def test_every_tour_button_lands_on_a_rendered_result(app_url, page, tmp_path):
    page.goto(app_url)
    tour_tab = page.get_by_role("tab", name="Tour")
    assert tour_tab.get_attribute("aria-selected") == "true", "the tour is what a newcomer sees first"
    errors = []
    for experiment, index, run in tour.runs():
        name = f"{experiment.id}-{index}"
        tour_tab.click()
        button = page.locator(f"#tour-{name}")
        assert button.inner_text().strip() == run.label
        selector = result_of(run)
        before = page.evaluate(SIGNATURE_JS, selector)
        button.click()
        page.get_by_role("tab", name=TAB_NAMES[run.tab], selected=True).wait_for()
        page.wait_for_function(f"([sel, before]) => document.querySelector(sel)?.querySelector('{RENDERED}') && "
                               f"({SIGNATURE_JS})(sel) !== before", arg=[selector, before])
        page.wait_for_function(f"({BUSY_JS})() === 0")        # the whole chain is over before the next click
        page.wait_for_function(f"sel => [...document.querySelectorAll(sel + ' :is({RENDERED})')]"
                               ".some(e => e.getBoundingClientRect().width > 0)", arg=selector)  # shown, not hidden
        errors += [f"{name}: {t}" for t in page.locator(".toast-body.error").all_inner_texts()]
    page.screenshot(path=str(tmp_path / "last.png"), full_page=True)
    assert errors == []
