"""The Denoising playback tab's handlers, called as functions on a real run: no server."""
from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

gr = pytest.importorskip("gradio")

from clipdiff.app.tabs import generate  # noqa: E402
from clipdiff.app.session import release_run  # noqa: E402
from clipdiff.app.tabs import playback as tab  # noqa: E402

PROMPTS = ["A deep red rose flower", "A round white daisy with a yellow center"]
STEPS = 4


@pytest.fixture
def run(ctx):
    """A finished Generate run of two images (every step recorded), as the session keeps it."""
    *_, last = list(generate.generate(ctx, "\n".join(PROMPTS), 2.0, STEPS, "ddim", 5, 1))[-1]
    return last


def test_after_a_run_the_tab_shows_its_last_step_and_the_cosines(ctx, run):
    sample, step, frame, caption, figure, gif = tab.show_playback(ctx, run)
    assert sample["choices"] == [(f"{PROMPTS[0]} (seed 5)", 0), (f"{PROMPTS[1]} (seed 5)", 1)] and sample["value"] == 0
    assert (step["minimum"], step["maximum"], step["value"], step["visible"]) == (1, STEPS, STEPS, True), \
        "the slider counts recorded steps 1..n, as the caption does"
    assert frame.size == (4 * 128 + 5 * 4, 44 + 128 + 2 * 4), "x_t, guided, conditional, unconditional x0"
    assert caption.startswith(f"Recorded step {STEPS} of {STEPS}: timestep t = ") and "cosine to the prompt" in caption
    assert run.playback.cosines.shape == (STEPS, 2), "computed once the run is shown"
    assert [trace.name for trace in figure.data][:2] == [f"{PROMPTS[0]} (seed 5)", f"{PROMPTS[1]} (seed 5)"]
    assert [shape.x0 for shape in figure.layout.shapes] == [run.playback.timesteps[-1]] * 2, "the step, marked"
    assert {trace.mode for trace in figure.data if trace.name.startswith("eps ")} == {"lines"}
    assert gif is None, "the previous run's GIF goes"
    assert tab.show_playback(ctx, None) == (gr.skip(),) * 6


def test_a_one_step_run_plays_back_as_one_frame(ctx):
    *_, one = list(generate.generate(ctx, PROMPTS[0], 2.0, 1, "ddim", 5, 1))[-1]
    _, step, frame, caption, figure, _ = tab.show_playback(ctx, one)
    gr.Slider(step["minimum"], step["maximum"])       # a valid slider: Gradio refuses minimum == maximum
    assert step["visible"] is False and step["value"] == 1, "nothing to scrub: no slider"
    assert caption.startswith("Recorded step 1 of 1 (a one-step run: its only frame)")
    eps = [trace for trace in figure.data if trace.name.startswith("eps ")]
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
