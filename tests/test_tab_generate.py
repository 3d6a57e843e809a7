"""The Generate tab's handlers, called as functions: no server."""
from __future__ import annotations

import dataclasses
import threading
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

gr = pytest.importorskip("gradio")

from clipdiff.app.context import Context, Models  # noqa: E402
from clipdiff.app.limits import MAX_BATCH, MAX_IMAGE_STEPS, SEED_RANGE  # noqa: E402
from clipdiff.app.runs import NOTHING_RAN, RunStatus, finished, said, stop_run  # noqa: E402
from clipdiff.app.session import LastRun  # noqa: E402
from clipdiff.app.tabs import generate as tab  # noqa: E402
from clipdiff.app.tabs import playback, sweep  # noqa: E402
from clipdiff.images import read_params, save_png  # noqa: E402
from clipdiff.playback import NEGATIVE_PANEL  # noqa: E402
from clipdiff.serving.fairness import InFlight  # noqa: E402
from clipdiff.testing import solid_image  # noqa: E402

PROMPTS = ["A deep red rose flower", "A round white daisy with a yellow center"]
ROSE, DAISY, SUNFLOWER = "A deep red rose flower", "A round white daisy", "An orange sunflower"
LONG = " ".join(["a white daisy with many long thin petals"] * 12)


def last(updates):
    return list(updates)[-1]


def pixels(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB")).astype(int)


def run_generate(ctx, *args):
    """Every output the handler streams: (gallery, status, seed, last run) per update."""
    return list(tab.generate(ctx, *args))


def test_generate_streams_previews_then_pngs_that_carry_their_parameters(ctx):
    updates = run_generate(ctx, "\n".join(PROMPTS), 2.0, 4, "ddim", 7, 2)
    assert [u[1] for u in updates[:-1]] == [f"Sampling: step {k} of 4" for k in (1, 2, 3)]
    preview = updates[0][0]
    assert len(preview) == 1 and "the 4 image(s) as they look now" in preview[0][1], "one picture of all images"
    assert all(u[3] is not None and not isinstance(u[3], LastRun) for u in updates[:-1]), "the run comes last"
    gallery, status, seed, run = updates[-1]
    assert status.startswith("Done: 4 image(s), seed 7, 4 ddim steps in ") and seed == 7
    params = [read_params(path) for path, _ in gallery]
    size = Image.open(gallery[0][0]).height
    assert preview[0][0].shape[:2] == (4 * size, 4 * 4 * size + 3 * 2), "4 images at 4x each: readable when shown"
    assert [(p["prompt"], p["seed"]) for p in params] == [(PROMPTS[0], 7), (PROMPTS[0], 8), (PROMPTS[1], 7),
                                                          (PROMPTS[1], 8)]
    assert all(p["w"] == 2.0 and p["steps"] == 4 and p["sampler"] == "ddim" for p in params)
    assert "CLIP score" in gallery[0][1]
    assert isinstance(run, LastRun) and run.frames.shape == (4, 16, 16, 3) and run.params == params
    assert len(run.playback.records) == 4, "every step recorded for playback"
    assert [round(x, 2) for x in run.scores] == [p["clip_score"] for p in params]


def test_the_same_seed_gives_the_same_images_and_an_empty_seed_a_random_one(ctx):
    a = run_generate(ctx, PROMPTS[0], 1.0, 2, "dpmsolver", 11, 1)[-1][3]
    b = run_generate(ctx, PROMPTS[0], 1.0, 2, "dpmsolver", 11, 1)[-1][3]
    assert (a.frames == b.frames).all()
    *_, seed, run = run_generate(ctx, PROMPTS[0], 1.0, 1, "ddim", None, 1)[-1]
    assert SEED_RANGE[0] <= seed <= SEED_RANGE[1] and run.params[0]["seed"] == seed


def test_too_much_is_clamped_and_said_in_the_status(ctx):
    prompts = "\n".join(f"flower {i}" for i in range(10)) + "\n" + LONG
    gallery, status, seed, run = run_generate(ctx, prompts, 2.0, 1, "ddim", -3.7, 8)[-1]
    assert len(gallery) == MAX_BATCH and seed == 0
    for note in ("11 prompts: using the first 8", "seed -3.7 is outside", f"At most {MAX_BATCH} images per run"):
        assert note in status
    truncated = run_generate(ctx, LONG, 2.0, 1, "ddim", 0, 1)[-1][1]
    assert "Prompt truncated to 77 tokens" in truncated


def test_impossible_values_are_refused_in_words(ctx):
    with pytest.raises(gr.Error, match="Type at least one prompt"):
        run_generate(ctx, " \n ", 2.0, 2, "ddim", 1, 1)
    with pytest.raises(gr.Error, match="sampler must be one of"):
        run_generate(ctx, PROMPTS[0], 2.0, 2, "euler", 1, 1)
    without_models = Context.create(Models(problems=["No diffusion model: gone."]))
    with pytest.raises(gr.Error, match="diffusion model is not loaded. No diffusion model: gone."):
        run_generate(without_models, PROMPTS[0], 2.0, 2, "ddim", 1, 1)


def test_show_tokens_marks_every_prompt_and_warns_of_truncation(ctx):
    pieces, summary = tab.show_tokens(ctx, f"{PROMPTS[0]}\n\n{LONG}")
    assert pieces[0] == ("<start>", "a") and ("\n", None) in pieces
    lines = summary.splitlines()
    assert lines[0].startswith("- Prompt 1: **7 / 77** tokens") and lines[1].startswith("- Prompt 2: **98 / 77**")
    assert "**Warning: truncated.**" in lines[2]
    assert tab.show_tokens(ctx, "") == ([], "No prompt yet.")
    assert tab.show_tokens(ctx, "x" * 10_001)[1].startswith("**Too long:** 10,001 characters")
    assert tab.show_tokens(Context.create(Models()), "a rose")[1].startswith("The CLIP model is not loaded")


def test_parameters_load_back_from_a_png_and_from_the_selected_image(ctx, tmp_path):
    gallery, *_, run = run_generate(ctx, "\n".join(PROMPTS), 1.5, 3, "ddim", 7, 2)[-1]
    assert tab.load_params(gallery[3][0]) == (PROMPTS[1], 1.5, 3, "ddim", 8, 1)
    assert tab.load_params({"path": gallery[0][0]})[0] == PROMPTS[0], "as an API client names a file"
    assert tab.load_params(None) == [gr.skip()] * 6
    with pytest.raises(gr.Error, match="no clipdiff parameters"):
        tab.load_params(str(solid_image(tmp_path, "plain.png", "red")))

    selected = tab.remember_selection(gr.SelectData(None, {"index": 2, "value": None, "selected": True}))
    assert selected == 2 and tab.reuse_selected(run, selected) == (PROMPTS[1], 1.5, 3, "ddim", 7, 1)
    for bad_run, index in ((None, 0), (run, 9), (run, None)):
        with pytest.raises(gr.Error, match="Click one of the last run's images first"):
            tab.reuse_selected(bad_run, index)


def test_parameters_from_a_png_are_checked_like_any_request(tmp_path):
    odd = save_png(Image.new("RGB", (4, 4)), tmp_path / "odd.png",
                   {"prompt": "a\x07 rose\nsecond line", "w": 99, "steps": 9999, "sampler": "euler"})
    assert tab.load_params(str(odd)) == ("a rose", 10.0, 400, "dpmsolver-karras", 0, 1)


def test_a_random_seed_is_in_the_seed_range():
    assert all(SEED_RANGE[0] <= tab.random_seed() <= SEED_RANGE[1] for _ in range(20))


def test_a_preview_is_one_picture_of_every_image_row_major():
    import numpy as np

    from clipdiff.app.runs import preview_grid

    frames = np.random.default_rng(0).integers(0, 256, (6, 16, 16, 3), dtype=np.uint8)
    grid = preview_grid(frames, scale=2)
    assert grid.shape == (2 * 32 + 2, 4 * 32 + 3 * 2, 3), "6 images in rows of 4, each twice its size"
    assert np.array_equal(grid[34:66, :32], frames[4].repeat(2, 0).repeat(2, 1))
    assert (grid[32:34] == 255).all(), "white gaps"


def test_the_steps_control_shows_the_steps_the_budget_allows(ctx):
    assert tab.steps_used("\n".join(f"flower {i}" for i in range(8)), 400, 1) == MAX_IMAGE_STEPS // 8
    assert tab.steps_used(PROMPTS[0], 400, 8) == MAX_IMAGE_STEPS // 8, "8 images of one prompt"
    assert tab.steps_used(PROMPTS[0], 12, 2) == gr.skip(), "within the budget: the control stays"
    assert tab.steps_used("", 400, 8) == gr.skip(), "generate itself refuses an empty prompt, in words"
    run = tab.generate(ctx, PROMPTS[0], 2.0, 400, "ddim", 1, 8)
    status = next(run)[1]
    run.close()
    assert f"of {MAX_IMAGE_STEPS // 8}" in status.splitlines()[0], "the run used what the control now shows"


def test_a_stopped_generate_run_ends_with_where_it_stopped_and_nothing_after_it(ctx):
    """Through one_per_session as the server calls it (a request with a session): Stop while the run streams; the
    run's last output says where it stopped and marks its preview unfinished, and Stop returns after it."""
    ctx = dataclasses.replace(ctx, preview_every_s=0, in_flight=InFlight())
    session = SimpleNamespace(session_hash="s")
    run = tab.generate(ctx, "A deep red rose flower", 2.0, 400, "ddim", 3, 1, "", request=session)
    assert next(run)[1].startswith("Sampling: step 1 of 400")
    answered = []
    stop = threading.Thread(target=lambda: answered.append(stop_run(ctx, 0, session)))
    stop.start()
    assert ctx.in_flight._running["s"].wait(timeout=60), "Stop set the run's stop event"
    *previews, last = list(run)
    stop.join()
    assert answered == [gr.skip()] and not ctx.in_flight.running("s"), "Stop answered after the run closed"
    assert stop_run(ctx, 4, session) == 5, "no run in flight: the cue for Gradio to cancel one still queued"
    assert len(previews) <= 1, "at most the step in progress ran after Stop"
    gallery, status, seed, kept = last
    assert status.startswith(f"**Stopped at step {2 + len(previews)} of 400.** The pictures are unfinished")
    assert gallery[0][1].startswith(f"UNFINISHED (stopped at step {2 + len(previews)} of 400)")
    assert seed == 3 and kept == gr.skip(), "the session's last run stays the one before"
    assert (status.stopped, status.step, status.of) == (True, 2 + len(previews), 400), "the outcome, as data"
    with pytest.raises(gr.Error):
        finished(status)                            # what follows a run (playback, ranking, history) does not follow
    assert finished(RunStatus("Done: 1 image(s)", 1, 1, done=True)) is None


def test_a_failed_event_s_status_is_rendered_from_the_run_s_outcome_not_its_text():
    """runs.said, after an event failed: a run Gradio cancelled says the last step it showed (its notes kept), one
    that said it stopped keeps that, a refusal says its reason once; nothing reads the status's text."""
    running = RunStatus("Sampling: step 7 of 9", 7, 9, notes=["seed -3 is outside 0 to 2147483647: using 0."])
    shown, kept = said(running)
    assert shown.startswith("**Stopped at step 7 of 9.**") and shown.endswith("using 0.") and shown.stopped
    assert kept == shown and said(shown) == (shown, shown), "a cancel arriving after the run stopped keeps it"
    refusal = RunStatus.refusal("Type at least one prompt (one per line); the box is empty.")
    assert said(refusal) == (refusal, NOTHING_RAN) and refusal.startswith("**Nothing ran.** Type at least one")
    assert said(NOTHING_RAN)[0] == said(None)[0] == NOTHING_RAN == "**Nothing ran.**", "cancelled in the queue"
    assert said(RunStatus("Done: 4 image(s)", 4, 4, done=True))[0] == NOTHING_RAN
    misleading = RunStatus("Stopped at step 3 of 4? Done: the prompt said so", 4, 4, done=True)
    assert not said(misleading)[0].stopped, "the words of a status (a prompt inside it) decide nothing"


def test_images_past_the_last_seed_wrap_and_each_one_s_parameters_make_it_again(ctx):
    """3 images from seed 2^31 - 2 use 2^31 - 2, 2^31 - 1 and 0 (said in the status), and "Use
    parameters" of any of them makes that image again, alone."""
    top = SEED_RANGE[1]
    *_, status, seed, run = run_generate(ctx, PROMPTS[0], 2.0, 2, "ddim", top - 1, 3)[-1]
    assert [p["seed"] for p in run.params] == [top - 1, top, 0] and seed == top - 1
    assert f"Seeds wrap past {top} to 0: the images use seeds {top - 1}, {top}, 0." in status
    for index in range(3):
        controls = tab.reuse_selected(run, index)
        assert controls[4] == run.params[index]["seed"] and controls[5] == 1
        again = run_generate(ctx, *controls)[-1][3]
        difference = np.abs(again.frames[0].astype(int) - run.frames[index].astype(int))
        assert difference.max() <= 2, f"image {index} made again (within batch-size rounding)"


def test_a_refusal_leaves_every_output_as_it_was_and_its_reason_in_the_status_s_outcome(ctx, tmp_path):
    """errors.said_in_status, as the page's events run a handler (wiring.Call with a status): each update's status
    also goes to the outcome (the last output); a refusal sends only the outcome, saying why, then reaches the client
    as the same gr.Error; a handler whose outputs hold no status (load_params fills the controls) refuses alike."""
    from functools import partial

    from clipdiff.app.errors import said_in_status

    outputs = ["gallery", "status", "seed", "last run"]       # stand-ins: the status is found by identity
    generating = said_in_status(partial(tab.generate, ctx), outputs, outputs[1])
    updates = list(generating(PROMPTS[0], 2.0, 2, "ddim", 4, 1))
    assert all(u[4] is u[1] and isinstance(u[4], RunStatus) for u in updates), "the status, as data, beside it"
    assert [(u[4].step, u[4].done) for u in updates] == [(1, False), (2, True)]
    updates = []
    with pytest.raises(gr.Error, match="Type at least one prompt"):
        updates.extend(generating(" ", 2.0, 2, "ddim", 4, 1))
    (*kept, outcome), = updates
    assert kept == [gr.skip()] * 4 and outcome.refused and outcome == RunStatus.refusal(
        "Type at least one prompt (one per line); the box is empty.")
    foreign = solid_image(tmp_path, "not-ours.png", "red")
    loading = said_in_status(tab.load_params, ["prompt", "w", "steps", "sampler", "seed", "n"], "status")
    updates = []
    with pytest.raises(gr.Error, match="carries no clipdiff parameters"):
        updates.extend(loading(str(foreign)))
    assert updates[0][:6] == (gr.skip(),) * 6 and updates[0][6].refused and len(updates) == 1


def test_downloads_are_named_for_what_they_show(ctx):
    gallery = run_generate(ctx, "Eine gelbe Sonnenblume, 2 Blüten!\n玫瑰", 1.5, 1, "ddim", 7, 1)[-1][0]
    names = [Path(path).name for path, _ in gallery]
    assert names == ["eine-gelbe-sonnenblume-2-bluten_w1.5_seed7.png", "clipdiff_w1.5_seed7.png"]
    from clipdiff.app.runs import file_name

    assert file_name("../../etc/passwd", -0.5, 3) == "etc-passwd_w-0.5_seed3"
    assert file_name("a" * 100) == "a" * 40


# -- the negative prompt and prompt editing in the Generate box -------------------------------------------
def test_generate_with_a_negative_prompt_carries_it_in_the_png_and_loads_it_back(ctx):
    plain, *_ = last(tab.generate(ctx, ROSE, 2.0, 3, "ddim", 7, 1))
    gallery, status, _, run = last(tab.generate(ctx, ROSE, 2.0, 3, "ddim", 7, 1, "  red\npetals "))
    params = read_params(gallery[0][0])
    assert params["negative_prompt"] == "red petals" and "negative: red petals" in gallery[0][1]
    assert "negative_prompt" not in read_params(plain[0][0])
    assert np.abs(pixels(plain[0][0]) - pixels(gallery[0][0])).max() > 2, "the negative changed the picture"
    assert tab.load_negative(gallery[0][0]) == "red petals" and tab.load_negative(plain[0][0]) == ""
    assert tab.load_negative(None) == gr.skip()
    assert tab.load_params(gallery[0][0]) == (ROSE, 2.0, 3, "ddim", 7, 1), "/load_params answers as before"
    assert tab.reuse_negative(run, 0) == "red petals" and tab.reuse_negative(None, 0) == gr.skip()
    assert run.playback.negative == [True] and run.playback.panels(0)[3] == NEGATIVE_PANEL


def test_an_over_long_negative_prompt_is_refused_in_words(ctx):
    with pytest.raises(gr.Error, match="negative prompt is 10,001 characters long"):
        last(tab.generate(ctx, ROSE, 2.0, 2, "ddim", 1, 1, "x" * 10_001))
    with pytest.raises(gr.Error, match="negative prompt must be text"):
        last(sweep.run_sweep(ctx, ROSE, "0", 1, 2, "ddim", 12))


def test_the_generate_box_reads_from_to_when_and_the_png_loads_it_back(ctx):
    gallery, status, _, run = last(tab.generate(ctx, f"[{DAISY}:{SUNFLOWER}:0.5]\n{DAISY}", 2.0, 4, "ddim", 3, 1))
    params = read_params(gallery[0][0])
    assert (params["prompt"], params["switch_to"], params["switch_at"]) == (DAISY, SUNFLOWER, 0.5)
    assert gallery[0][1].startswith(f"[{DAISY}:{SUNFLOWER}:0.5] | w 2")
    assert tab.load_params(gallery[0][0])[0] == f"[{DAISY}:{SUNFLOWER}:0.5]"
    assert run.playback.switch_timesteps[0] == run.playback.records[2].timestep, "switched after 2 of 4 steps"
    assert run.playback.switch_timesteps[1] is None
    _, _, _, caption, figure, _, _ = playback.show_playback(ctx, run)
    assert any(shape.line.dash == "dot" for shape in figure.layout.shapes), "the switch marked"
    assert "cosine to the first prompt" in [trace.name for trace in figure.data]
    assert "cosine to the second prompt (the one it switched to) " in caption and ", to the first prompt " in caption
    second = playback.scrub(run, 1, 1)[1]
    assert "cosine to the prompt " in second and "first prompt" not in second, "the daisy alone never switched"
    stepped = last(tab.generate(ctx, f"[{DAISY}:{SUNFLOWER}:9]", 2.0, 4, "ddim", 3, 1))[1]
    assert "switches at step 9, but the run has 4: it never switches" in stepped


@pytest.mark.parametrize("prompt, words", [("a [red rose", "a \\[ without its \\]"), ("a [red] rose", "not prompt "),
                                           ("[a:b:0.2] [c:d:0.3]", "one switch per prompt"),
                                           ("[a:b:[c:d:1]:1]", "brackets inside brackets"),
                                           ("[a:b:2.5]", "between 0 and 1")])
def test_brackets_that_do_not_parse_get_a_clear_message(ctx, prompt, words):
    with pytest.raises(gr.Error, match=words):
        last(tab.generate(ctx, prompt, 2.0, 2, "ddim", 1, 1))


def test_runs_in_flight_together_share_the_previews_of_two_lone_runs(ctx):
    """A preview is a picture written and streamed: alone (or with one other) a run previews every preview_every_s;
    ten runs at once each preview five times less often, so a full room's previews cost what two lone runs' do."""
    ctx = dataclasses.replace(ctx, preview_every_s=0.2, in_flight=InFlight())
    ctx.in_flight.acquire("a")
    assert ctx.preview_interval() == 0.2
    ctx.in_flight.acquire("b")
    assert ctx.preview_interval() == 0.2
    for k in range(8):
        ctx.in_flight.acquire(f"s{k}")
    assert ctx.preview_interval() == pytest.approx(1.0)
    for k in range(8):
        ctx.in_flight.release(f"s{k}")
    assert ctx.preview_interval() == 0.2, "the rate comes back as the room empties"
