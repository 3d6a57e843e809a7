"""Every screenshot in assets/screenshots/, taken with the shipped models (checkpoints/) in headless Chromium at an
attendee's laptop size, 1280 x 800: each tab with a real result, issue 16's fixes (a one-step playback, a stopped
run, an empty prompt refused cleanly, a tour button's note, words the training captions never used, honest CLIP
scores) and issue 15's prompt debugging (negative prompt, switch strip, word importance).

    python benchmarks/screenshots.py [--out assets/screenshots] [--only generate playback ...] [--list]

Each shot opens the app afresh (its own session), waits for the real result, scrolls the part it shows into the
800 px window and saves the viewport. A shot that fails says why and the others go on; the exit code is 1 if any
failed. The app runs in this process on the CPU; all the shots take a few minutes on 2 cores.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from clipdiff import tour  # noqa: E402
from clipdiff.testing.browser import (LAPTOP, chromium_page, error_marks, in_view, open_tab, pin_runs,  # noqa: E402
                                     set_number, wait_for_text)
from clipdiff.testing.live import app_in_this_process  # noqa: E402

SHOT_TIMEOUT_MS = 300_000          # one wait of one shot: a busy 2-core machine samples slowly
STEP_SLIDER = "recorded step (1: pure noise; the last: the image)"
BUSY_JS = "() => document.querySelectorAll('.generating, .pending, .eta-bar').length === 0"   # Gradio's trackers
IMAGES_LOADED_JS = """sel => { const imgs = [...document.querySelectorAll(sel)];
  return imgs.length > 0 && imgs.every(i => i.complete && i.naturalWidth > 0); }"""
PAINTED_JS = "() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))"


class ShotProblem(AssertionError):
    """What a shot shows is not what its name says (the picture is still saved, to look at)."""


@dataclass
class Shot:
    name: str                      # the file, without .png
    shows: str
    take: Callable                 # (page, url) -> None: leaves the page as the picture should show it
    allow_error_toast: bool = False


SHOTS: dict[str, Shot] = {}


def shot(name: str, shows: str, allow_error_toast: bool = False):
    def register(take):
        SHOTS[name] = Shot(name, shows, take, allow_error_toast)
        return take
    return register


# -- waiting and scrolling ---------------------------------------------------------------------------------------
def expect(condition: bool, message: str) -> None:
    if not condition:
        raise ShotProblem(message)


def open_app(page, url: str) -> None:
    """A fresh page: a new session with nothing run yet, on the Tour tab, scrolled to the top."""
    page.goto(url)
    page.get_by_role("tab", name="Tour", selected=True).wait_for()
    page.wait_for_function(BUSY_JS)


def images_loaded(page, selector: str) -> None:
    page.wait_for_function(IMAGES_LOADED_JS, arg=selector)


def settled(page) -> None:
    """No event of the page still running (a run's follow-ups included), every shown picture loaded, painted."""
    page.wait_for_function(BUSY_JS)
    page.wait_for_function("() => [...document.images].filter(i => i.offsetParent !== null)"
                           ".every(i => i.complete)")
    page.evaluate(PAINTED_JS)


def top_at(page, selector: str, margin: int = 10) -> None:
    """Scroll so that the element's top is `margin` px below the top of the window."""
    page.evaluate("([sel, m]) => { const e = document.querySelector(sel); "
                  "window.scrollBy({top: e.getBoundingClientRect().top - m, behavior: 'instant'}); }",
                  [selector, margin])
    page.evaluate(PAINTED_JS)


def under_note(page, selector: str, gap: int = 8) -> None:
    """Scroll so that the element's top is just below the tour's note (which stays at the top of the window)."""
    page.evaluate("([sel, gap]) => { const note = document.getElementById('tour-note'); "
                  "const top = note && note.offsetParent !== null ? note.getBoundingClientRect().bottom : 0; "
                  "window.scrollBy({top: document.querySelector(sel).getBoundingClientRect().top - top - gap, "
                  "behavior: 'instant'}); }", [selector, gap])
    page.evaluate(PAINTED_JS)


def unfocus(page) -> None:
    """No text box focused (a number typed into a slider's box leaves it outlined, with its spinner), and the
    pointer off the buttons (a hovered button is drawn darker)."""
    page.evaluate("() => document.activeElement?.blur()")
    page.mouse.move(2, 2)


def scroll_top(page) -> None:
    page.evaluate("() => window.scrollTo({top: 0, behavior: 'instant'})")
    page.evaluate(PAINTED_JS)


def generate(page, prompt: str | None = None, steps: int | None = None, negative: str | None = None,
             images: int | None = None, w: float | None = None) -> None:
    """Generate with these settings (the rest as the tab has them) and wait until the run and what follows it
    (playback, ranking, the runs list) are done, its pictures loaded."""
    open_tab(page, "Generate")
    if prompt is not None:
        page.fill("#prompts textarea", prompt)
    if negative is not None:
        page.fill("#negative textarea", negative)
    if steps is not None:
        set_number(page, "steps", steps)
    if images is not None:
        set_number(page, "images per prompt", images)
    if w is not None:
        set_number(page, "guidance w", w)
    before = page.inner_text("#status")
    page.click("#generate")
    page.wait_for_function("([s, before]) => { const t = document.querySelector(s)?.innerText || '';"
                           " return t.includes('Done') && t !== before; }", arg=["#status", before])
    images_loaded(page, "#gallery img")
    unfocus(page)
    settled(page)


def open_playback(page, steps: int) -> None:
    open_tab(page, "Denoising playback")
    wait_for_text(page, "#pb-caption", f"of {steps}")
    images_loaded(page, "#pb-frame img")
    page.locator("#pb-plot .js-plotly-plot .main-svg").first.wait_for()
    settled(page)


def scrub_to(page, step: int) -> None:
    set_number(page, STEP_SLIDER, step)
    wait_for_text(page, "#pb-caption", f"Recorded step {step} of")
    unfocus(page)
    images_loaded(page, "#pb-frame img")
    settled(page)


def tour_button(page, button: str, result: str) -> None:
    """Click a tour button and wait for its result (`result`'s pictures, or its plot) and the whole chain to end;
    the page stays where the tour scrolled it, under the experiment's note."""
    open_tab(page, "Tour")
    page.click(f"#tour-{button}")
    page.locator("#tour-note").wait_for()
    page.wait_for_function("sel => document.querySelector(sel)?.querySelector('img, .js-plotly-plot .main-svg')",
                           arg=result)
    page.wait_for_function(BUSY_JS)
    settled(page)
    expect(in_view(page, "#tour-note"), "the tour's note is not in view")


# -- the tabs ----------------------------------------------------------------------------------------------------
@shot("tour", "the Tour tab as a newcomer first sees it: the intro and the first experiments' buttons")
def tour_tab(page, url):
    open_app(page, url)
    scroll_top(page)


@shot("tour-guidance", "a tour button's landing: the guidance sweep under the experiment's note, with 'Back to the "
                       "tour' and 'Restore my settings'")
def tour_guidance(page, url):
    open_app(page, url)
    open_tab(page, "Guidance sweep")
    page.fill("#sweep-prompts textarea", "my own prompt")        # what 'Restore my settings' would put back
    tour_button(page, "guidance-0", "#sweep-grid")
    wait_for_text(page, "#sweep-status", "Done")
    expect(in_view(page, "#tour-restore"), "'Restore my settings' is not in view")
    expect(page.locator("#sweep-grid img").bounding_box()["y"] < LAPTOP[1] - 200, "the sweep's grid is not in view")


@shot("tour-playback", "the tour's playback experiment: a 20-step sunflower's recorded steps under the note")
def tour_playback(page, url):
    open_app(page, url)
    tour_button(page, "playback-0", "#pb-frame")
    wait_for_text(page, "#pb-caption", f"Recorded step {tour.PLAYBACK_STEPS} of {tour.PLAYBACK_STEPS}")
    note = page.locator("#tour-note").bounding_box()
    for control in ("#pb-sample", "#pb-play", "#pb-pause", "#pb-fps", "#pb-frame img"):
        expect(page.locator(control).bounding_box()["y"] >= note["y"] + note["height"] and in_view(page, control),
               f"{control} is under the tour's note or out of view")


@shot("tour-variations", "the tour's variations experiment: four variations of a rose from its CLIP image embedding")
def tour_variations(page, url):
    open_app(page, url)
    tour_button(page, "variations-0", "#va-gallery")
    images_loaded(page, "#va-gallery img")
    expect(page.locator("#va-gallery img").count() == 4, "not four variations")
    under_note(page, "#va-gallery", gap=60)            # the status above the variations, and them whole


def tour_negative(page, url, index: int) -> None:
    open_app(page, url)
    tour_button(page, f"negative-{index}", "#gallery")
    wait_for_text(page, "#status", "Done: 4 image(s)")
    images_loaded(page, "#gallery img")


@shot("tour-negative-before", "the tour's negative-prompt experiment, first button: four roses with the null")
def tour_negative_before(page, url):
    tour_negative(page, url, 0)


@shot("tour-negative", "the tour's negative-prompt experiment, second button: the same four seeds, negative 'red'")
def tour_negative_red(page, url):
    tour_negative(page, url, 1)


@shot("generate", "Generate after a run: the status and the images, captioned with their CLIP score and what noise "
                  "scores against the same prompt, beside the controls")
def generate_tab(page, url):
    open_app(page, url)
    generate(page)
    scroll_top(page)
    expect(in_view(page, "#generate") and in_view(page, "#status") and in_view(page, "#gallery img"),
           "the Generate button, the status and the images are not all in view")
    expect("(noise" in page.inner_text("#gallery"), "the captions give no noise baseline")


@shot("sweep", "the guidance sweep: the reference prompts x w = -2..2 from one seed, beside its controls")
def sweep_tab(page, url):
    open_app(page, url)
    open_tab(page, "Guidance sweep")
    page.click("#sweep")
    wait_for_text(page, "#sweep-status", "Done")
    images_loaded(page, "#sweep-grid img")
    settled(page)
    scroll_top(page)


@shot("playback", "the denoising playback of a run scrubbed to step 4 of 12: the four panels and the two heat maps "
                  "of where guidance acts, the step marked on the plot, the image picker, Play, Pause and the speed "
                  "control")
def playback_tab(page, url):
    open_app(page, url)
    generate(page)
    open_playback(page, 12)
    scrub_to(page, 4)
    top_at(page, "#pb-sample")
    expect(in_view(page, "#pb-pause") and in_view(page, "#pb-fps"), "the playback controls are not in view")


@shot("compare", "Compare runs: two Generate runs pinned side by side with their images and settings")
def compare_tab(page, url):
    open_app(page, url)
    generate(page, "A deep red rose flower")
    generate(page, "A round white daisy with a yellow center")
    pin_runs(page, 2)
    images_loaded(page, ".compare-run img")
    settled(page)
    top_at(page, "#runs")
    expect(in_view(page, ".compare-run:nth-child(2)"), "the second pinned run is not in view")


def similarity_result(page, url) -> None:
    open_app(page, url)
    generate(page)
    open_tab(page, "Similarity")
    page.get_by_role("button", name="Compare", exact=True).click()
    page.wait_for_function("() => document.querySelectorAll('#similarity-plot svg image').length >= 4")
    settled(page)
    top_at(page, "#similarity-plot")


@shot("similarity", "Similarity: cosine and softmax heatmaps of the reference prompts against a run's two images, "
                    "each column with its image's thumbnail")
def similarity_tab(page, url):
    similarity_result(page, url)


@shot("similarity-hover", "Similarity with the pointer on a heatmap cell: the hovered image's thumbnail beside it")
def similarity_hover(page, url):
    similarity_result(page, url)
    cell = page.locator("#similarity-plot .nsewdrag").first.bounding_box()
    page.mouse.move(cell["x"] + cell["width"] * 0.75, cell["y"] + cell["height"] * 0.83)   # the rose row: the matching pairs
    page.wait_for_function("() => getComputedStyle(document.getElementById('clipdiff-thumb')).display === 'block'")
    images_loaded(page, "#clipdiff-thumb")
    page.evaluate(PAINTED_JS)


@shot("map", "the embedding map: the atlas with the reference prompts (stars) and a run's two images (diamonds) "
             "placed on it, the pointer on an image: its prompt, seed and picture")
def map_tab(page, url):
    open_app(page, url)
    generate(page)
    open_tab(page, "Embedding map")
    page.get_by_role("button", name="Draw map", exact=True).click()
    page.wait_for_function("() => (document.querySelector('#map-plot')?.textContent || '').includes('your images')")
    settled(page)
    top_at(page, "#map-plot")
    # the hover targets (the one SVG trace) follow the placed points: the three prompts, then the run's images
    image = page.locator("#map-plot .scatterlayer .trace .point").nth(3)
    box = image.bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.wait_for_function("() => getComputedStyle(document.getElementById('clipdiff-thumb')).display === 'block'")
    images_loaded(page, "#clipdiff-thumb")
    page.evaluate(PAINTED_JS)


@shot("interpolate", "Interpolate and vary: the slerp strip from the daisy to the rose, and the weighted mix")
def interpolate_tab(page, url):
    open_app(page, url)
    open_tab(page, "Interpolate and vary")
    page.get_by_role("button", name="Interpolate", exact=True).click()
    images_loaded(page, "#ip-strip img")
    page.wait_for_function(BUSY_JS)
    page.get_by_role("button", name="Mix", exact=True).click()
    images_loaded(page, "#mix-strip img")
    settled(page)
    top_at(page, "#ip-strip", margin=110)             # from the Interpolate button to the mix strip


@shot("photo-forward", "Noise and edit a photo: a generated rose noised to t = 100, the strip over t with one seed's "
                      "noise, a_bar_t and the SNR with t marked")
def photo_forward(page, url):
    open_app(page, url)
    generate(page, images=1)
    open_tab(page, "Noise and edit a photo")
    set_number(page, "timestep t", 100)
    page.click("#fw-go")
    wait_for_text(page, "#fw-status", "At t = 100")
    images_loaded(page, "#fw-strip img")
    page.wait_for_function("() => document.querySelectorAll('#fw-plot .scatterlayer .trace').length >= 4")
    settled(page)
    top_at(page, "#fw-status", margin=60)


@shot("photo-edit", "SDEdit: the rose edited towards the sunflower prompt from 0.6 T, and the same edit from "
                    "several starts")
def photo_edit(page, url):
    open_app(page, url)
    generate(page, images=1)
    open_tab(page, "Noise and edit a photo")
    page.click("#ed-go")
    wait_for_text(page, "#ed-status", "Done")
    images_loaded(page, "#ed-strip img")
    settled(page)
    top_at(page, "#ed-go", margin=10)


# -- issue 16: an attendee's laptop ------------------------------------------------------------------------------
@shot("playback-one-step", "a one-step run in the playback: its only frame, no slider to scrub, no error mark")
def playback_one_step(page, url):
    open_app(page, url)
    generate(page, steps=1)
    open_playback(page, 1)
    wait_for_text(page, "#pb-caption", "Recorded step 1 of 1 (a one-step run")
    top_at(page, "[role=tablist]", margin=4)


@shot("generate-stopped", "a run stopped part way: 'Stopped at step k of n', the previews marked UNFINISHED")
def generate_stopped(page, url):
    open_app(page, url)
    open_tab(page, "Generate")
    set_number(page, "steps", 400)
    page.click("#generate")
    page.wait_for_function("() => Number(((document.querySelector('#status')?.innerText || '')"
                           ".match(/Sampling: step (\\d+)/) || [])[1] || 0) >= 60")   # far enough to show a flower
    images_loaded(page, "#gallery img")
    page.click("#stop")
    wait_for_text(page, "#status", "Stopped at step")
    wait_for_text(page, "#gallery", "UNFINISHED")
    unfocus(page)
    settled(page)
    scroll_top(page)
    expect("of 400" in page.inner_text("#status"), "the status does not say of how many steps")


@shot("generate-empty-prompt", "an empty prompt refused: 'Nothing ran' and the reason in the status, the reason in "
                               "the corner too, no red Error marks", allow_error_toast=True)
def generate_empty_prompt(page, url):
    open_app(page, url)
    open_tab(page, "Generate")
    page.fill("#prompts textarea", "")
    page.click("#generate")
    wait_for_text(page, "#status", "Nothing ran. Type at least one prompt")
    page.locator(".toast-body").first.wait_for()
    page.wait_for_function("() => { for (let e = document.querySelector('.toast-body'); e; e = e.parentElement) "
                           "if (getComputedStyle(e).opacity !== '1') return false; return true; }")   # faded in
    unfocus(page)
    settled(page)
    scroll_top(page)


@shot("generate-unknown-words", "the token view of 'una rosa roja': words the training captions never used marked "
                                "red and named; the captions show that noise already scores high on such a prompt")
def generate_unknown_words(page, url):
    open_app(page, url)
    generate(page, "una rosa roja")
    wait_for_text(page, "#token-summary", "Never in the training captions")
    scroll_top(page)
    expect(in_view(page, "#token-summary"), "the note on unknown words is not in view")


@shot("generate-unreliable", "a 1-step run: each caption marked UNRELIABLE, the status saying why its CLIP scores "
                             "say little")
def generate_unreliable(page, url):
    open_app(page, url)
    generate(page, steps=1)
    wait_for_text(page, "#gallery", "UNRELIABLE")
    wait_for_text(page, "#status", "These CLIP scores say little")
    scroll_top(page)


# -- issue 15: debugging a prompt --------------------------------------------------------------------------------
def negative_run(page, url) -> None:
    open_app(page, url)
    generate(page, tour.ROSE_PLAIN, negative="red", images=4)


@shot("generate-negative", "a negative prompt in Generate: 'A rose' with the negative 'red', four seeds")
def generate_negative(page, url):
    negative_run(page, url)
    top_at(page, "#prompts")
    expect(in_view(page, "#negative") and in_view(page, "#gallery img"), "the negative box or the images are hidden")


@shot("playback-negative", "the playback of the negative-prompt run: the fourth panel is the negative x0, the plot "
                           "adds the cosine to the negative prompt")
def playback_negative(page, url):
    negative_run(page, url)
    open_playback(page, 12)
    top_at(page, "#pb-step")


def switch_strip(page, url) -> None:
    open_app(page, url)
    open_tab(page, "Debug a prompt")
    experiment = next(e for e in tour.EXPERIMENTS if e.id == "prompt-editing").runs[0].then
    page.fill("#pe-fractions textarea", ", ".join(f"{f:g}" for f in experiment.fractions))
    page.click("#pe-go")
    wait_for_text(page, "#pe-status", "Done")
    images_loaded(page, "#pe-strip img")
    settled(page)


@shot("debug-prompt-edit", "the switch strip: daisy, then sunflower, switching later and later from one seed")
def debug_prompt_edit(page, url):
    switch_strip(page, url)
    top_at(page, "#pe-a", margin=90)                  # under the section's heading


@shot("playback-switch", "the playback of the switch strip's f = 0.3 image: the switch marked on the plot")
def playback_switch(page, url):
    switch_strip(page, url)
    open_playback(page, 12)
    before = page.get_attribute("#pb-frame img", "src")
    page.click("#pb-sample input")
    page.get_by_role("option").nth(3).click()            # the fourth image of the strip: f = 0.3
    page.wait_for_function("before => document.querySelector('#pb-frame img')?.src !== before", arg=before)
    images_loaded(page, "#pb-frame img")
    settled(page)
    top_at(page, "#pb-step")


@shot("debug-words", "word importance: each word of a caption shaded by its effect, the strip without each word")
def debug_words(page, url):
    open_app(page, url)
    open_tab(page, "Debug a prompt")
    page.fill("#wi-prompt textarea", tour.WORDY_CAPTION)
    page.click("#wi-go")
    wait_for_text(page, "#wi-status", "Done")
    images_loaded(page, "#wi-strip img")
    settled(page)
    top_at(page, "#wi-go")


# -- running them --------------------------------------------------------------------------------------------------
def take(page, url: str, s: Shot, out: Path) -> None:
    """One shot into out/NAME.png; raises what went wrong (after saving the picture, when there is one)."""
    path = out / f"{s.name}.png"
    problem = None
    try:
        s.take(page, url)
    except ShotProblem as e:
        problem = e                                        # the page is as far as it got: keep the picture
    expect(page.viewport_size == {"width": LAPTOP[0], "height": LAPTOP[1]}, "the viewport is not 1280 x 800")
    marks = error_marks(page)
    toasts = [] if s.allow_error_toast else page.locator(".toast-body.error").all_inner_texts()
    page.screenshot(path=str(path))
    print(f"wrote {path}", flush=True)
    if problem is not None:
        raise problem
    expect(marks == 0, f"{marks} red Error mark(s) on the page")
    expect(not toasts, f"error message(s): {toasts}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(ROOT / "assets" / "screenshots"), help="where the PNGs go")
    parser.add_argument("--only", nargs="+", metavar="NAME", choices=list(SHOTS),
                        help="take only these shots (names without .png)")
    parser.add_argument("--list", action="store_true", help="list the shots and what each shows, then stop")
    args = parser.parse_args(argv)
    if args.list:
        for s in SHOTS.values():
            print(f"{s.name}.png: {s.shows}")
        return 0
    from clipdiff.app.context import Models

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    wanted = [SHOTS[name] for name in (args.only or SHOTS)]
    failed = []
    started = time.perf_counter()
    models = Models.load(device="cpu")
    if models.problems:
        print("the shipped models did not all load:", *models.problems, sep="\n  ", file=sys.stderr)
        return 1
    with app_in_this_process(models, concurrency=1) as app, chromium_page(*LAPTOP, timeout_ms=SHOT_TIMEOUT_MS) as page:
        for s in wanted:
            t0 = time.perf_counter()
            try:
                take(page, app.url, s, out)
                print(f"  {s.name}: {time.perf_counter() - t0:.0f} s", flush=True)
            except Exception as e:          # noqa: BLE001 (one failing shot must not stop the others)
                failed.append(s.name)
                print(f"FAILED {s.name} after {time.perf_counter() - t0:.0f} s: {type(e).__name__}: {e}",
                      file=sys.stderr, flush=True)
                if not isinstance(e, ShotProblem):
                    traceback.print_exc(limit=3)
                    try:                    # what the page showed when it went wrong, to look at
                        debug = Path(tempfile.gettempdir()) / f"screenshot-failed-{s.name}.png"
                        page.screenshot(path=str(debug))
                        print(f"  the page as it was: {debug}", file=sys.stderr)
                    except Exception:       # noqa: BLE001
                        pass
    print(f"{len(wanted) - len(failed)} of {len(wanted)} screenshot(s) in {out}, "
          f"{time.perf_counter() - started:.0f} s" + (f"; failed: {' '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
