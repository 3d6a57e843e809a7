"""An attendee's laptop: the real app in Chromium at 1280 x 800, against tiny random models. After Generate
the result is in view; a one-step run plays back; Stop says the run stopped; a tour button keeps its explanation in
view and gives the attendee's settings back; pinned runs sit side by side; Similarity shows which image is which."""
from __future__ import annotations

import pytest

from clipdiff.testing import refused_uploads, solid_image
from clipdiff.testing.browser import error_marks, in_view, open_tab, pin_runs, set_number, wait_for_text

STATUS_HAS = "([s, t]) => (document.querySelector(s)?.innerText || '').includes(t)"


def generate(page, prompt: str | None = None, steps: int | None = None, keyboard: bool = False) -> None:
    open_tab(page, "Generate")
    if prompt is not None:
        page.fill("#prompts textarea", prompt)
    if steps is not None:
        set_number(page, "steps", steps)
    before = page.inner_text("#status")
    if keyboard:
        page.focus("#prompts textarea")
        page.keyboard.press("Control+Enter")
    else:
        page.click("#generate")
    page.wait_for_function(f"([s, before]) => ({STATUS_HAS})([s, 'Done']) && "
                           "document.querySelector(s).innerText !== before", arg=["#status", before])


def test_after_generate_the_newest_result_is_in_view_whole(live_app, laptop, tmp_path):
    laptop.goto(live_app.url)
    generate(laptop)
    assert in_view(laptop, "#status") and in_view(laptop, "#gallery img"), "no scrolling to see the result"
    sizes = laptop.locator("#gallery img").evaluate_all("imgs => imgs.map(i => [i.clientWidth, i.clientHeight])")
    assert len(sizes) == 2 and all(w == h >= 96 for w, h in sizes), f"whole square images, not cropped: {sizes}"
    assert error_marks(laptop) == 0
    laptop.screenshot(path=str(tmp_path / "generate.png"))


def test_a_one_step_run_plays_back_as_one_frame_with_no_error(live_app, laptop):
    laptop.goto(live_app.url)
    generate(laptop, steps=1)
    open_tab(laptop, "Denoising playback")
    wait_for_text(laptop, "#pb-caption", "Recorded step 1 of 1")
    laptop.locator("#pb-frame img").wait_for()
    assert error_marks(laptop) == 0 and laptop.locator(".toast-body.error").count() == 0
    assert laptop.locator("#pb-frame label:visible").count() == 0, "no label badge over the panel titles"
    assert not laptop.locator("#pb-gif").is_visible(), "no empty GIF box before there is a GIF"
    laptop.get_by_role("button", name="Export GIF").click()
    laptop.locator("#pb-gif .file-preview").wait_for()
    assert laptop.locator("#pb-gif").bounding_box()["height"] < 150, "the GIF's box is compact"


def run_then_stop(page, tab: str, go: str, stop: str, status: str, running: str, preview: str) -> None:
    """Start a 400-step run in a tab, press Stop once its status says `running` and its preview is on screen (as an
    attendee would: the page sends Stop the pictures it shows), wait until the status says it stopped."""
    open_tab(page, tab)
    set_number(page, "steps", 400)
    page.click(go)
    wait_for_text(page, status, running)
    page.locator(preview).first.wait_for()
    page.click(stop)
    wait_for_text(page, status, "Stopped at step")


def test_after_stop_the_page_says_the_run_stopped(live_app, laptop):
    laptop.goto(live_app.url)
    run_then_stop(laptop, "Generate", "#generate", "#stop", "#status", "Sampling: step", "#gallery img")
    laptop.wait_for_function("() => [...document.querySelectorAll('#gallery img')].some(i => "
                             "(i.alt || '').includes('UNFINISHED'))")
    status = laptop.inner_text("#status")
    step = status.split("Stopped at step ", 1)[1].split(" of ", 1)[0]
    alts = laptop.locator("#gallery img").evaluate_all("imgs => imgs.map(i => i.alt)")
    assert all(f"stopped at step {step} of 400" in alt for alt in alts), f"one step in both: {status!r} {alts}"
    laptop.fill("#prompts textarea", "A deep red rose flower with a yellow center")   # a round trip to the server
    wait_for_text(laptop, "#token-summary", "Prompt 1")
    assert laptop.inner_text("#status") == status, "nothing came after the run's own last word"
    assert error_marks(laptop) == 0


def test_stop_in_the_sweep_says_where_it_stopped(live_app, laptop):
    laptop.goto(live_app.url)
    run_then_stop(laptop, "Guidance sweep", "#sweep", "#sweep-stop", "#sweep-status", ": step", "#sweep-grid img")
    assert error_marks(laptop) == 0


def test_stop_takes_a_run_still_waiting_in_the_queue_out_of_it(gated_models, laptop):
    """One model run at a time: another attendee's run is held in flight, ours waits in the queue, and Stop cancels
    it there (Gradio's cancel, cued by Stop finding no run of ours in flight): it never reaches the sampler."""
    from clipdiff.testing.live import app_in_this_process

    backend = gated_models.backend
    with app_in_this_process(gated_models, concurrency=1, preview_every_s=0) as app:
        other = laptop.context.browser.new_page(viewport=laptop.viewport_size)   # a session of its own
        for page in (other, laptop):
            page.goto(app.url)
            open_tab(page, "Generate")
        other.click("#generate")
        assert backend.holding.wait(60), "the other attendee's run never started"
        laptop.click("#generate")
        wait_for_text(laptop, "#status", "queue")
        laptop.click("#stop")
        wait_for_text(laptop, "#status", "Nothing ran")
        backend.release.set()
        wait_for_text(other, "#status", "Done")
        generate(laptop)            # one run at a time, in order: a run left in the queue would have gone first
        assert backend.started == 2, "the stopped run never started"
        assert error_marks(laptop) == 0


def test_an_empty_prompt_is_refused_without_leaving_error_marks(live_app, laptop):
    laptop.goto(live_app.url)
    open_tab(laptop, "Generate")
    laptop.fill("#prompts textarea", "")
    laptop.click("#generate")
    wait_for_text(laptop, "#status", "Nothing ran")
    assert error_marks(laptop) == 0


def refuse(page, act, status: str, reason: str, kept: dict[str, str], results: str) -> None:
    """Do something the app refuses; it says why in the corner and in the tab's status, leaves no "Error" mark, every
    input as it was (kept: selector -> value) and the previous result (results: a selector) in place."""
    shown = page.locator(results).count()
    assert shown > 0, f"a result to keep: {results}"
    act()
    wait_for_text(page, status, reason)
    page.locator(".toast-body.error", has_text=reason).first.wait_for()
    assert error_marks(page) == 0, f"no Error mark after: {reason}"
    assert page.locator(results).count() == shown, f"the previous result stays: {reason}"
    for selector, value in kept.items():
        assert page.input_value(selector) == value, f"{selector} as it was: {reason}"


def test_refusals_in_every_tab_leave_no_error_mark_and_the_previous_result_in_place(live_app, laptop, tmp_path):
    """A refusal never hides a control or a result, at 1280 x 800: Use parameters with nothing selected, a PNG clipdiff did not make, sweep w values
    that are no numbers, switch fractions with a word among them, a text file as Similarity's image."""
    laptop.goto(live_app.url)
    generate(laptop)
    prompt = laptop.input_value("#prompts textarea")
    refuse(laptop, lambda: laptop.get_by_role("button", name="Use parameters of the selected image").click(),
           "#status", "Click one of the last run's images first", {"#prompts textarea": prompt}, "#gallery img")
    foreign = solid_image(tmp_path, "not-ours.png", "red")
    refuse(laptop, lambda: laptop.set_input_files("#png-in input[type=file]", str(foreign)), "#status",
           "carries no clipdiff parameters", {"#prompts textarea": prompt}, "#gallery img")

    open_tab(laptop, "Guidance sweep")
    laptop.fill("#sweep-ws textarea", "0, 2")
    laptop.click("#sweep")
    wait_for_text(laptop, "#sweep-status", "Done")
    laptop.fill("#sweep-ws textarea", "a, b")
    refuse(laptop, lambda: laptop.click("#sweep"), "#sweep-status", "w value must be a number, not 'a'",
           {"#sweep-ws textarea": "a, b"}, "#sweep-grid img")

    open_tab(laptop, "Debug a prompt")
    laptop.fill("#pe-fractions textarea", "0, 0.5")
    laptop.click("#pe-go")
    wait_for_text(laptop, "#pe-status", "Done")
    laptop.fill("#pe-fractions textarea", "0, 0.5, x")
    refuse(laptop, lambda: laptop.click("#pe-go"), "#pe-status", "switch fraction must be a number, not 'x'",
           {"#pe-fractions textarea": "0, 0.5, x"}, "#pe-strip img")

    open_tab(laptop, "Similarity")
    laptop.get_by_role("button", name="Compare", exact=True).click()
    laptop.wait_for_function("() => document.querySelectorAll('#similarity-plot svg image').length >= 2")
    text = refused_uploads(tmp_path)["text-named-png"]

    def upload_text_and_compare():
        laptop.set_input_files("#similarity-files input[type=file]", str(text))
        laptop.locator("#similarity-files", has_text="text.png").wait_for()
        laptop.get_by_role("button", name="Compare", exact=True).click()

    refuse(laptop, upload_text_and_compare, "#similarity-status", "image 1 is not a readable image",
           {"#similarity-texts textarea": laptop.input_value("#similarity-texts textarea")},
           "#similarity-plot svg image")


def test_a_tour_button_lands_with_its_explanation_in_view_and_gives_settings_back(live_app, laptop, tmp_path):
    """The note: in view on the run's tab, one line when folded, only on that tab; Restore puts back the attendee's
    prompt and the sweep grid they had; Back returns to the experiment."""
    laptop.goto(live_app.url)
    open_tab(laptop, "Guidance sweep")
    laptop.fill("#sweep-prompts textarea", "my own prompt")
    laptop.click("#sweep")
    wait_for_text(laptop, "#sweep-status", "Done")
    mine = laptop.locator("#sweep-grid img").get_attribute("src")
    open_tab(laptop, "Tour")
    laptop.click("#tour-guidance-0")
    laptop.get_by_role("tab", name="Guidance sweep", selected=True).wait_for()
    wait_for_text(laptop, "#tour-note", "What guidance does")
    laptop.wait_for_function("src => document.querySelector('#sweep-grid img')?.src !== src", arg=mine)
    wait_for_text(laptop, "#sweep-status", "Done")
    assert in_view(laptop, "#tour-note"), "the explanation stays on screen"
    assert laptop.locator("#sweep-grid img").bounding_box()["y"] < laptop.viewport_size["height"], "and the result"
    laptop.screenshot(path=str(tmp_path / "tour-note-open.png"))
    laptop.locator("#tour-note-details").get_by_role("button").first.click()      # fold the explanation
    laptop.locator("#tour-note-text").wait_for(state="hidden")
    assert laptop.locator("#tour-note").bounding_box()["height"] <= 90, "folded: one line"
    assert in_view(laptop, "#tour-note") and "What guidance does" in laptop.inner_text("#tour-note")
    laptop.screenshot(path=str(tmp_path / "tour-note-folded.png"))
    open_tab(laptop, "Generate")
    laptop.locator("#tour-note").wait_for(state="hidden")                 # not the tab the experiment opened
    open_tab(laptop, "Guidance sweep")
    laptop.locator("#tour-note").wait_for(state="visible")
    laptop.click("#tour-restore")
    laptop.wait_for_function("() => document.querySelector('#sweep-prompts textarea').value === 'my own prompt'")
    laptop.wait_for_function("src => document.querySelector('#sweep-grid img')?.src === src", arg=mine)
    assert "1 prompt(s)" in laptop.inner_text("#sweep-status"), "the status of the attendee's own run"
    laptop.click("#tour-back")
    laptop.get_by_role("tab", name="Tour", selected=True).wait_for()
    laptop.wait_for_function("() => { const r = document.getElementById('tour-guidance').getBoundingClientRect();"
                             " return r.top >= 0 && r.bottom <= window.innerHeight; }")


def test_two_pinned_runs_show_side_by_side_and_play_back(live_app, laptop):
    laptop.goto(live_app.url)
    generate(laptop, "A deep red rose flower")
    generate(laptop, "A white daisy", keyboard=True)          # Ctrl+Enter in the prompt box runs Generate
    pin_runs(laptop, 2)
    first, second = (laptop.locator(".compare-run").nth(k).bounding_box() for k in (0, 1))
    assert abs(first["y"] - second["y"]) < 2 and first["x"] + first["width"] <= second["x"], "side by side"
    assert second["x"] + second["width"] <= laptop.viewport_size["width"]
    assert laptop.locator(".compare-run img").count() == 4
    laptop.click("#compare-open")
    laptop.get_by_role("tab", name="Denoising playback", selected=True).wait_for()
    wait_for_text(laptop, "#pb-caption", "Recorded step")


def test_similarity_shows_each_image_s_thumbnail(live_app, laptop):
    laptop.goto(live_app.url)
    generate(laptop)
    open_tab(laptop, "Similarity")
    laptop.get_by_role("button", name="Compare", exact=True).click()
    laptop.wait_for_function("() => document.querySelectorAll('#similarity-plot svg image').length >= 4")
    cell = laptop.locator("#similarity-plot .nsewdrag").first.bounding_box()
    for height in (0.5, 0.05):      # the middle, and the top row: near the plot's top edge
        laptop.mouse.move(cell["x"] + cell["width"] * 0.25, cell["y"] + cell["height"] * height)
        laptop.wait_for_function("() => getComputedStyle(document.getElementById('clipdiff-thumb')).display "
                                 "=== 'block' && document.querySelector('#similarity-plot .hoverlayer .hovertext')")
        laptop.evaluate("() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")
        assert laptop.get_attribute("#clipdiff-thumb", "src").startswith("data:image/png;base64,")
        # both boxes read in one frame: plotly redraws its hover text on every mouse event, so a box read apart
        # from the other may belong to an element already replaced
        thumb, label = laptop.wait_for_function("""() => {
            const t = document.getElementById('clipdiff-thumb');
            const l = document.querySelector('#similarity-plot .hoverlayer .hovertext');
            if (!l || getComputedStyle(t).display !== 'block') return null;
            const box = e => { const r = e.getBoundingClientRect(); return {x: r.x, y: r.y, width: r.width, height: r.height}; };
            return [box(t), box(l)];
        }""").json_value()
        apart = (thumb["x"] + thumb["width"] <= label["x"] or label["x"] + label["width"] <= thumb["x"]
                 or thumb["y"] + thumb["height"] <= label["y"] or label["y"] + label["height"] <= thumb["y"])
        assert apart, f"the thumbnail {thumb} covers plotly's hover text {label}"


def test_enter_in_a_single_line_box_runs_its_tab_s_action(live_app, laptop):
    """Enter in a one-line box (here the second prompt of the switch strip) clicks the tab's main button, the first
    primary button after the box, and adds no new line to the box."""
    laptop.goto(live_app.url)
    open_tab(laptop, "Debug a prompt")
    laptop.focus("#pe-b textarea")
    laptop.keyboard.press("Enter")
    wait_for_text(laptop, "#pe-status", "Done")
    assert "\n" not in laptop.input_value("#pe-b textarea")
    assert error_marks(laptop) == 0


def test_a_long_prompt_s_caption_is_one_line_whole_on_hover_and_stop_looks_idle(live_app, laptop):
    from clipdiff.tour import LONG_PROMPT

    laptop.goto(live_app.url)
    generate(laptop, LONG_PROMPT)
    caption = laptop.locator("#gallery .caption-label").first
    caption.wait_for()
    assert caption.get_attribute("title").startswith(LONG_PROMPT[:100]), "the whole caption on hover"
    line = laptop.evaluate("() => parseFloat(getComputedStyle(document.querySelector('#gallery .caption-label'))"
                           ".lineHeight)")
    assert caption.bounding_box()["height"] < 2 * line, "cut to one line"
    idle, working = laptop.evaluate("""() => { const s = getComputedStyle(document.getElementById('stop'));
        return [s.backgroundColor, getComputedStyle(document.getElementById('generate')).backgroundColor]; }""")
    assert idle != "rgb(185, 28, 28)" and working != idle, "Stop is grey while nothing runs"
