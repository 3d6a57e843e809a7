"""Screenshots of the prompt-debugging features (issue 15) with the shipped models, 1280 x 800, into
assets/screenshots/: a negative prompt in Generate, its playback, the switch strip, its playback with the switch
marked, and word importance.

    python benchmarks/screenshots_debugging.py [--out assets/screenshots]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from clipdiff import tour  # noqa: E402
from clipdiff.testing.browser import chromium_page, wait_for_text  # noqa: E402
from clipdiff.testing.live import app_in_this_process  # noqa: E402

SIZE = (1280, 800)


def top_at(page, selector: str, margin: int = 10) -> None:
    """Scroll so that the element's top is near the top of the window."""
    page.evaluate("([sel, m]) => { const e = document.querySelector(sel); "
                  "window.scrollBy(0, e.getBoundingClientRect().top - m); }", [selector, margin])
    page.wait_for_timeout(400)


def playback(page, out: Path, name: str, sample: int = 0) -> None:
    page.get_by_role("tab", name="Denoising playback").click()
    wait_for_text(page, "#pb-caption", "Recorded step")
    if sample:
        page.click("#pb-sample input")
        page.keyboard.press("ArrowDown" if sample > 0 else "ArrowUp")
        for _ in range(sample - 1):
            page.keyboard.press("ArrowDown")
        page.keyboard.press("Enter")
        page.wait_for_timeout(1500)
    page.locator(".js-plotly-plot").first.wait_for()
    page.wait_for_timeout(800)
    top_at(page, "#pb-step")
    page.screenshot(path=str(out / name))


def main(argv=None) -> None:
    from clipdiff.app.context import Models

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(ROOT / "assets" / "screenshots"))
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with app_in_this_process(Models.load(device="cpu"), concurrency=1) as app, \
            chromium_page(*SIZE, timeout_ms=300_000) as page:
        page.goto(app.url)
        for index, name in ((0, "tour-negative-before.png"), (1, "tour-negative.png")):   # the tour's two runs
            page.get_by_role("tab", name="Tour").click()
            page.click(f"#tour-negative-{index}")
            wait_for_text(page, "#status", "Done: 4 image(s)")
            page.locator("#gallery img").first.wait_for()
            page.wait_for_timeout(1500)
            top_at(page, "#status", margin=40)
            page.screenshot(path=str(out / name))
        top_at(page, "#negative")
        page.screenshot(path=str(out / "generate-negative.png"))
        playback(page, out, "playback-negative.png")

        page.get_by_role("tab", name="Debug a prompt").click()
        experiment = next(e for e in tour.EXPERIMENTS if e.id == "prompt-editing").runs[0].then
        page.fill("#pe-fractions textarea", ", ".join(f"{f:g}" for f in experiment.fractions))
        page.click("#pe-go")
        wait_for_text(page, "#pe-status", "Done")
        page.locator("#pe-strip img").wait_for()
        page.wait_for_timeout(1000)
        top_at(page, "#pe-a")
        page.screenshot(path=str(out / "debug-prompt-edit.png"))
        playback(page, out, "playback-switch.png", sample=3)

        page.get_by_role("tab", name="Debug a prompt").click()
        page.fill("#wi-prompt textarea", tour.WORDY_CAPTION)
        page.click("#wi-go")
        wait_for_text(page, "#wi-status", "Done")
        page.locator("#wi-strip img").wait_for()
        page.wait_for_timeout(1000)
        top_at(page, "#wi-go")
        page.screenshot(path=str(out / "debug-words.png"))
    print(f"screenshots in {out}")


if __name__ == "__main__":
    main()
