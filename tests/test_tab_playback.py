"""The Denoising playback tab's handlers, called as functions on a real run: no server."""
from __future__ import annotations

from pathlib import Path

import pytest
import numpy as np
from PIL import Image

gr = pytest.importorskip("gradio")

from clipdiff.app.tabs import generate  # noqa: E402
from clipdiff.app.session import release_run  # noqa: E402
from clipdiff.app.tabs import playback as tab  # noqa: E402

ROSE, DAISY = "A deep red rose flower", "A round white daisy"
PROMPTS = ["A deep red rose flower", "A round white daisy with a yellow center"]
STEPS = 4


@pytest.fixture
def run(ctx):
    """A finished Generate run of two images (every step recorded), as the session keeps it."""
    *_, last = list(generate.generate(ctx, "\n".join(PROMPTS), 2.0, STEPS, "ddim", 5, 1))[-1]
    return last


def last(updates):
    return list(updates)[-1]


def test_after_a_run_the_tab_opens_a_third_of_the_way_in(ctx, run):
    sample, step, frame, caption, figure, gif, hint = tab.show_playback(ctx, run)
    pb = run.playback
    assert sample["choices"] == [(f"{PROMPTS[0]} (seed 5)", 0), (f"{PROMPTS[1]} (seed 5)", 1)] and sample["value"] == 0
    opening = 1       # of steps 0..3: a third of the way in, neither pure noise nor the finished image
    assert (step["minimum"], step["maximum"], step["value"], step["visible"]) == (1, STEPS, opening + 1, True), \
        "the slider counts recorded steps 1..n, as the caption does"
    assert frame.size == (6 * 128 + 7 * 4, 44 + 128 + 2 * 4), "x_t, guided, conditional, unconditional x0, 2 maps"
    assert frame.tobytes() == tab.scrub(run, 0, opening + 1)[0].tobytes()
    assert caption.startswith(f"Recorded step {opening + 1} of {STEPS}: timestep t = ")
    assert "cosine to the prompt" in caption and "one scale for every step" in caption
    assert pb.cosines.shape == (STEPS, 2), "computed once the run is shown"
    assert [trace.name for trace in figure.data][:2] == [f"{PROMPTS[0]} (seed 5)", f"{PROMPTS[1]} (seed 5)"]
    assert [shape.x0 for shape in figure.layout.shapes] == [pb.timesteps[opening]] * 2, "the step, marked"
    means = [trace for trace in figure.data if trace.name.startswith("mean ")]
    assert [trace.name for trace in means] == ["mean |eps_c - eps_u|", "mean guidance |w (eps_c - eps_u)|"]
    assert {trace.mode for trace in means} == {"lines"}
    assert np.allclose(means[0].y, [r.eps_gap[0].astype(np.float32).mean() for r in pb.records])
    assert gif is None, "the previous run's GIF goes"
    assert hint == {"visible": False, "__type__": "update"}, "the hint to generate first goes once a run exists"
    assert tab.show_playback(ctx, None) == (gr.skip(),) * 7


def test_heat_maps_share_one_scale_over_the_steps_and_a_w0_run_has_no_guidance(ctx):
    *_, plain = list(generate.generate(ctx, PROMPTS[0], 0.0, STEPS, "ddim", 5, 1))[-1]
    pb = plain.playback
    assert all(not r.guidance.any() for r in pb.records), "w = 0: the guidance term is zero at every pixel and step"
    assert any(r.eps_gap.any() for r in pb.records), "though the prompt changes the prediction"
    scale = pb.heat_scale(0)
    values = np.stack([m[0] for r in pb.records for m in (r.eps_gap, r.guidance)]).astype(np.float32)
    assert scale == np.percentile(values, 99) > 0 and (values > scale).mean() < 0.011, "about 1% above the top"
    cell = 128
    for k in range(STEPS):
        frame = np.asarray(pb.frame(k, 0, cell))
        top, left = 44 + 4, 4 + 5 * (cell + 4)
        guidance_panel = frame[top:top + cell, left:left + cell]
        assert (guidance_panel == guidance_panel[0, 0]).all() and guidance_panel[0, 0].max() < 8, "all black"
    brightest = int(np.argmax([r.eps_gap[0].max() for r in pb.records]))
    top, left = 44 + 4, 4 + 4 * (cell + 4)
    gap_panel = np.asarray(pb.frame(brightest, 0, cell))[top:top + cell, left:left + cell]
    assert gap_panel.sum(-1).max() > 600, "the step with the largest gap reaches the top of the scale (yellow)"
    assert "Heat maps: black 0 to yellow " in tab.step_caption(pb, 0, 0)
    _, _, _, caption, figure, _, _ = tab.show_playback(ctx, plain)
    guidance = next(trace for trace in figure.data if trace.name == "mean guidance |w (eps_c - eps_u)|")
    assert not np.any(guidance.y), "the plot's mean of the guidance term is zero too"


def test_a_one_step_run_plays_back_as_one_frame(ctx):
    *_, one = list(generate.generate(ctx, PROMPTS[0], 2.0, 1, "ddim", 5, 1))[-1]
    _, step, frame, caption, figure, _, _ = tab.show_playback(ctx, one)
    gr.Slider(step["minimum"], step["maximum"])       # a valid slider: Gradio refuses minimum == maximum
    assert step["visible"] is False and step["value"] == 1, "nothing to scrub: no slider"
    assert caption.startswith("Recorded step 1 of 1 (a one-step run: its only frame)")
    eps = [trace for trace in figure.data if trace.name.startswith("mean ")]
    assert eps and all("markers" in trace.mode for trace in eps), "one point makes no line: it gets a marker"
    t = one.playback.timesteps[0]
    for axis in (figure.layout.xaxis, figure.layout.xaxis2):
        assert axis.range[0] > t and axis.range[1] < 0, "the whole way from above t down to 0, sampling left to right"
    assert tab.scrub(one, 0, 1)[0].tobytes() == frame.tobytes()
    assert list(tab.play(one, 0, 1, 30)) == [1]


def test_scrubbing_and_picking_read_recorded_frames(ctx, run):
    first, caption, figure = tab.scrub(run, 1, 1)
    last, _, _ = tab.scrub(run, 1, STEPS)
    assert caption.startswith(f"Recorded step 1 of {STEPS}: timestep t = 399") and first.tobytes() != last.tobytes()
    assert figure.layout.shapes[0].x0 == 399, "the plot marks the step shown"
    assert tab.scrub(run, 1, 99)[0].tobytes() == last.tobytes(), "a step past the end is the last step"
    frame, _, figure = tab.pick_sample(ctx, run, 1, 1)
    assert frame.tobytes() == first.tobytes()
    assert [t.line.width for t in figure.data[:2]] == [1, 3], "the picked image's curve stands out"
    assert tab.scrub(None, 0, 0) == (gr.skip(), "No run yet: generate an image first.", gr.skip())
    assert tab.pick_sample(ctx, None, 0, 0) == (gr.skip(),) * 3


def test_play_steps_the_slider_through_the_run_and_starts_over_at_the_end(run):
    assert list(tab.play(run, 0, 2, 30)) == [2, 3, 4]
    assert list(tab.play(run, 0, STEPS, 30)) == [1, 2, 3, 4], "at the end: from the start"
    with pytest.raises(gr.Error, match="No run to play back yet"):
        list(tab.play(None, 0, 0))


def test_a_run_exports_as_a_gif_named_for_what_it_shows_until_its_frames_are_released(ctx, run):
    path = tab.gif(ctx, run, 1)
    assert Path(path).name == "playback_a-round-white-daisy-with-a-yellow-center_w2_seed5.gif"
    with Image.open(path) as gif:
        assert gif.n_frames == STEPS
    release_run(run)
    assert run.playback.records == [] and run.playback.cosines is None
    with pytest.raises(gr.Error, match="No run to play back yet"):
        tab.gif(ctx, run, 0)
    assert tab.tour_steps(ctx, None, None, None) == [], "the Generate step already showed the run"


def test_the_playback_names_the_negative_panel_and_draws_the_cosine_to_it(ctx):
    *_, run = last(generate.generate(ctx, f"{ROSE}\n{DAISY}", 2.0, 3, "ddim", 7, 1, "red"))
    _, _, frame, caption, figure, _, _ = tab.show_playback(ctx, run)
    assert "x_t | x0 (guided) | x0 (conditional) | negative x0 | |eps_c - eps_neg| | guidance |w (eps_c - eps_neg)|" \
        in caption, "the panels' names follow the run"
    assert ", to the negative prompt " in caption.splitlines()[0], "the caption gives both cosines"
    names = [trace.name for trace in figure.data]
    assert "cosine to the negative prompt" in names and "mean |eps_c - eps_neg|" in names
    cosines = run.playback.extra_cosines["negative prompt"]
    assert cosines.shape == (3, 2) and np.isfinite(cosines).all()
    plain = last(generate.generate(ctx, ROSE, 2.0, 3, "ddim", 7, 1))[-1]
    _, _, _, caption, figure, _, _ = tab.show_playback(ctx, plain)
    assert "| x0 (unconditional) | |eps_c - eps_u| |" in caption and "negative" not in caption
    assert not any("negative" in (trace.name or "") for trace in figure.data), "nothing new without a negative"
    assert plain.playback.panels(0)[3] == "x0 (unconditional)"
