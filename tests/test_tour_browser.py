"""The Tour tab in a real browser: every tour button lands on its tab with a freshly rendered result."""
from __future__ import annotations

from clipdiff import tour

TAB_NAMES = {"generate": "Generate", "sweep": "Guidance sweep", "playback": "Denoising playback",
             "similarity": "Similarity", "map": "Embedding map", "interpolate": "Interpolate and vary",
             "debug": "Debug a prompt", "photo": "Noise and edit a photo"}
RESULTS = {"generate": "#gallery", "sweep": "#sweep-grid", "playback": "#pb-frame", "similarity": "#similarity-plot",
           "map": "#map-plot", tour.Interpolate: "#ip-strip", tour.Mix: "#mix-strip", tour.Vary: "#va-gallery",
           tour.PromptEdit: "#pe-strip", tour.Words: "#wi-strip",
           tour.ForwardNoise: "#fw-strip", tour.EditPhoto: "#ed-strip"}
RENDERED = "img, .js-plotly-plot .main-svg"   # a picture, or a drawn Plotly figure

# What the result element shows now: its pictures' addresses and its plot's text. A new result changes it.
SIGNATURE_JS = """sel => { const c = document.querySelector(sel); if (!c) return '';
  return [...c.querySelectorAll('img')].map(i => i.src).join('|') + '#' + c.textContent; }"""
BUSY_JS = "() => document.querySelectorAll('.generating, .pending, .eta-bar').length"   # Gradio's status trackers


def result_of(run: tour.Run) -> str:
    return RESULTS.get(type(run.then)) or RESULTS[run.tab]


def test_every_tour_button_lands_on_a_rendered_result(live_app, page, tmp_path):
    page.goto(live_app.url)
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
        if run.tab == "playback":    # the landing leaves the image picker, Play, Pause and speed below the note
            note = page.locator("#tour-note").bounding_box()
            for control in ("#pb-sample", "#pb-play", "#pb-pause", "#pb-fps", "#pb-frame img"):
                box = page.locator(control).bounding_box()
                assert box["y"] >= note["y"] + note["height"] and box["y"] + box["height"] <= page.viewport_size["height"], control
        errors += [f"{name}: {t}" for t in page.locator(".toast-body.error").all_inner_texts()]
    page.screenshot(path=str(tmp_path / "last.png"), full_page=True)
    assert errors == []
