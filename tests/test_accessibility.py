"""Accessibility in a real browser: an axe-core audit (axe-playwright-python) of every tab, on a laptop
(1280 x 800) and on a phone (390 x 844), finds no critical or serious violation, with results on screen as well as
before any run; and every generated picture carries alt text that names what made it (prompt, w, seed)."""
from __future__ import annotations

import pytest

from clipdiff.testing.browser import LAPTOP, PHONE, chromium_page, have_chromium, open_tab, tab_names, wait_for_text

pytest.importorskip("axe_playwright_python")
if not have_chromium():
    pytest.skip("Chromium is not installed", allow_module_level=True)

BLOCKING = ("critical", "serious")


def blocking_violations(page) -> list[str]:
    """axe-core's critical and serious violations on the page as shown, one line each with up to three elements."""
    from axe_playwright_python.sync_playwright import Axe

    found = Axe().run(page).response["violations"]
    return [f"{v['id']} ({v['impact']}, {len(v['nodes'])}): " + "; ".join(n["html"][:120] for n in v["nodes"][:3])
            for v in found if v["impact"] in BLOCKING]


def audit_every_tab(page) -> dict[str, list[str]]:
    from clipdiff.app.blocks import TABS

    names = tab_names(page)
    assert len(names) == 1 + len(TABS) and names[0] == "Tour", names
    found = {}
    for name in names:
        open_tab(page, name)
        page.wait_for_function("() => document.querySelectorAll('.generating, .pending').length === 0")
        found[name] = blocking_violations(page)
    return {name: v for name, v in found.items() if v}


@pytest.mark.parametrize("size", [LAPTOP, PHONE], ids=["laptop", "phone"])
def test_axe_finds_no_critical_or_serious_violation_on_any_tab(live_app, size):
    with chromium_page(*size) as page:
        page.goto(live_app.url)
        page.get_by_role("tab", name="Tour").wait_for()
        assert audit_every_tab(page) == {}, "before any run"
        open_tab(page, "Generate")
        page.click("#generate")
        wait_for_text(page, "#status", "Done")
        assert audit_every_tab(page) == {}, "with a run's results on the page"


def test_every_picture_component_has_alt_text(live_app):
    """The composite pictures (strips, the sweep grid, the playback frame) say what they show; galleries' pictures
    take their captions as alt text (the next test)."""
    import gradio as gr

    images = [b for b in live_app.demo.blocks.values() if isinstance(b, gr.Image)]
    assert len(images) >= 7
    assert [b.label for b in images if not (b.alt_text or "").strip()] == []


def test_generated_images_have_alt_text_naming_prompt_w_and_seed(live_app, laptop):
    laptop.goto(live_app.url)
    open_tab(laptop, "Generate")
    laptop.fill("#prompts textarea", "A deep red rose flower")
    laptop.click("#generate")
    wait_for_text(laptop, "#status", "Done")
    alts = laptop.locator("#gallery img").evaluate_all("imgs => imgs.map(i => i.alt)")
    assert len(alts) == 2
    for k, alt in enumerate(alts):
        assert alt.startswith("A deep red rose flower | w 2 | seed ") and f"seed {k}" in alt, alts
