"""The Denoising playback tab: the last run's recorded steps side by side (x_t, guided, conditional and
unconditional x0), when the image commits to its prompt, and a GIF. Reads recorded frames; never runs the U-Net."""
from __future__ import annotations

import time
from dataclasses import dataclass

import gradio as gr

from ... import tour
from ...playback import PlaybackRun, export_gif
from ..context import Context
from ..errors import answers_clearly
from ..figures import playback_figure
from ..inputs import Checked
from ..limits import PLAY_FRAME_S
from ..session import has_playback
from ..wiring import PRIVATE, Call, Shared, bind

TAKES = (tour.Playback,)


@answers_clearly
def show_playback(ctx: Context, run):
    """Runs after every new run: the playback tab at the run's last step, its CLIP cosines computed now."""
    if not has_playback(run):
        return gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip()
    pb = run.playback_with_cosines(ctx.models.need_encoder())
    last = len(pb.records) - 1
    return (gr.update(choices=[(label, i) for i, label in enumerate(pb.labels)], value=0),
            gr.update(minimum=0, maximum=last, value=last), pb.frame(last, 0), step_caption(pb, last, 0),
            playback_figure(pb, 0))


def step_caption(pb: PlaybackRun, step: int, sample: int) -> str:
    cos = f", cosine to the prompt {pb.cosines[step, sample]:.3f}" if pb.cosines is not None else ""
    return f"Recorded step {step + 1} of {len(pb.records)}: timestep t = {pb.records[step].timestep}{cos}"


def playback_position(run, sample, step) -> tuple[PlaybackRun, int, int]:
    """The run's playback and a checked (image, recorded step) in it."""
    if not has_playback(run):
        raise gr.Error("No run to play back yet: generate an image first (Generate tab).")
    pb = run.playback
    checked = Checked()
    sample = checked.number(sample, "image", 0, pb.num_samples - 1, integer=True, default=0)
    step = checked.number(step, "step", 0, len(pb.records) - 1, integer=True, default=0)
    return pb, sample, step


@answers_clearly
def scrub(run, sample, step):
    """Reads a recorded frame; never runs the model."""
    if not has_playback(run):
        return gr.skip(), "No run yet: generate an image first."
    pb, sample, step = playback_position(run, sample, step)
    return pb.frame(step, sample), step_caption(pb, step, sample)


@answers_clearly
def pick_sample(ctx: Context, run, sample, step):
    if not has_playback(run):
        return gr.skip(), gr.skip(), gr.skip()
    pb, sample, step = playback_position(run, sample, step)
    run.playback_with_cosines(ctx.models.need_encoder())
    frame, caption = scrub(run, sample, step)
    return frame, caption, playback_figure(pb, sample)


@answers_clearly
def play(run, sample, step):
    """Step the slider through the recorded steps; each new value redraws through scrub."""
    pb, sample, step = playback_position(run, sample, step)
    start = 0 if step >= len(pb.records) - 1 else step
    for k in range(start, len(pb.records)):
        yield k
        time.sleep(PLAY_FRAME_S)


@answers_clearly
def gif(ctx: Context, run, sample):
    pb, sample, _ = playback_position(run, sample, 0)
    return str(export_gif(pb, sample, ctx.outputs.path(".gif")))


@dataclass
class PlaybackTab:
    sample: gr.Dropdown
    play: gr.Button
    gif: gr.Button
    step: gr.Slider
    caption: gr.Markdown
    frame: gr.Image
    plot: gr.Plot
    file: gr.File


def build(ctx: Context) -> PlaybackTab:
    with gr.Tab("Denoising playback", id="playback"):
        gr.Markdown("Generate first; every step of the last run is recorded. Scrubbing shows recorded "
                    "frames, nothing is recomputed.")
        with gr.Row():
            sample = gr.Dropdown(choices=[], label="image", type="value", allow_custom_value=True,
                                 elem_id="pb-sample")
            play_button = gr.Button("Play", elem_id="pb-play")
            gif_button = gr.Button("Export GIF")
        step = gr.Slider(0, 1, value=0, step=1, label="recorded step (left: noise, right: image)",
                         elem_id="pb-step")
        caption = gr.Markdown(elem_id="pb-caption")
        frame = gr.Image(label="x_t | guided x0 | conditional x0 | unconditional x0", type="pil",
                         format="png", elem_id="pb-frame", elem_classes=["pixelated"])
        plot = gr.Plot(label="when does the image commit to the prompt?")
        file = gr.File(label="GIF")
    return PlaybackTab(sample, play_button, gif_button, step, caption, frame, plot, file)


def show_call(ctx: Context, tab: PlaybackTab, last_run: gr.State) -> Call:
    """What follows every new run: this tab shows it."""
    return Call(bind(show_playback, ctx), last_run, [tab.sample, tab.step, tab.frame, tab.caption, tab.plot],
                ctx.model_group)


def wire(ctx: Context, tab: PlaybackTab, shared: Shared) -> None:
    position = [shared.last_run, tab.sample, tab.step]
    quiet = {"show_progress": "hidden", **PRIVATE}
    Call(scrub, position, [tab.frame, tab.caption]).on(tab.step.change, **quiet)
    Call(bind(pick_sample, ctx), position, [tab.frame, tab.caption, tab.plot]).on(tab.sample.input, **quiet)
    Call(play, position, tab.step).on(tab.play.click, **quiet)
    Call(bind(gif, ctx), [shared.last_run, tab.sample], tab.file).on(tab.gif.click, api_name="playback_gif")


def tour_fill(tab: PlaybackTab, then: tour.Playback) -> dict:
    return {}


def tour_steps(ctx: Context, tab: PlaybackTab, shared: Shared, then: tour.Playback) -> list[Call]:
    return []     # the run's Generate step already showed its run here (shared.after_run)
