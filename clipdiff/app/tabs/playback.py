"""The Denoising playback tab: the last run's recorded steps side by side (x_t, guided, conditional and
unconditional x0, and heat maps of where guidance acts), when the image commits to its prompt, and a GIF. Reads
recorded frames; never runs the U-Net."""
from __future__ import annotations

import time
from dataclasses import dataclass

import gradio as gr
import numpy as np

from ... import tour
from ...fast import needs_teacher
from ...playback import PlaybackRun, export_gif
from ..context import Context
from ..errors import answers_clearly
from ..figures import playback_figure
from ..inputs import Checked
from ..limits import PLAY_FPS, PLAY_FPS_RANGE
from ..runs import file_name
from ..session import has_playback, made_by_student
from ..wiring import PRIVATE, Call, Shared, bind

TAKES = (tour.Playback,)


HINT = ("Generate first; every step of the last run is recorded. Scrubbing shows recorded frames, nothing is "
        "recomputed.")
NEEDS_TEACHER = needs_teacher("Playback") + " The last run used the fast mode, whose steps are not recorded."


@answers_clearly
def show_playback(ctx: Context, run):
    """Runs after every new run: the playback tab at the run's opening step (a third of the way in), its CLIP cosines
    computed now, the previous run's GIF gone and the hint to generate first hidden."""
    if made_by_student(run):    # the previous run's frames go: they are not this run's
        return (gr.update(choices=[], value=None), gr.update(visible=False), None, "", None, None,
                gr.update(value=f"**{NEEDS_TEACHER}**", visible=True))
    if not has_playback(run):
        return (gr.skip(),) * 7
    pb = run.playback_with_cosines(ctx.models.need_encoder())
    opening = pb.opening_step()
    return (gr.update(choices=[(label, i) for i, label in enumerate(pb.labels)], value=0),
            step_slider(len(pb.records), opening + 1), pb.frame(opening, 0), step_caption(pb, opening, 0),
            playback_figure(pb, 0, opening), None, gr.update(visible=False))


def step_slider(steps: int, value: int) -> dict:
    """The slider over a run's recorded steps, numbered 1..steps like the caption, at value. A slider needs two
    values, so a one-step run (one frame, nothing to scrub) hides it rather than asking for a 1..1 range."""
    return gr.update(minimum=1, maximum=max(steps, 2), value=value, visible=steps > 1)


def step_caption(pb: PlaybackRun, step: int, sample: int) -> str:
    """step: 0-based; the caption, like the slider, counts from 1. It says which prompt each cosine is against (a
    switched prompt's cosine is to the prompt it switched to) and the heat maps' shared scale."""
    cos = f", {cosine_note(pb, step, sample)}" if pb.cosines is not None else ""
    only = " (a one-step run: its only frame)" if len(pb.records) == 1 else ""
    scale = pb.heat_scale(sample)
    heat = (f"Heat maps: black 0 to yellow {scale:.3g} and above (the top 1% of this image's values), one scale for "
            "every step" if scale > 0 else "Heat maps: black, zero (almost) everywhere at every step")
    return (f"Recorded step {step + 1} of {len(pb.records)}{only}: timestep t = {pb.records[step].timestep}{cos}"
            f"  \nPanels, left to right: {' | '.join(pb.panels(sample))}  \n{heat}")


def cosine_note(pb: PlaybackRun, step: int, sample: int) -> str:
    """The caption's cosines of this step's guided x0: to the prompt (the second one when the prompt switched), then
    to the first prompt of a switch or to the negative prompt, where the sample has one."""
    against = "the second prompt (the one it switched to)" if pb.switch_timestep(sample) is not None else "the prompt"
    notes = [f"cosine to {against} {pb.cosines[step, sample]:.3f}"]
    for name, cosines in pb.extra_cosines.items():
        if len(cosines) and not np.isnan(cosines[step, sample]):
            notes.append(f"to the {name} {cosines[step, sample]:.3f}")
    return ", ".join(notes)


def playback_position(run, sample, step) -> tuple[PlaybackRun, int, int]:
    """The run's playback and a checked (image, recorded step) in it: step as the slider numbers it (1..steps),
    returned 0-based."""
    if made_by_student(run):
        raise gr.Error(NEEDS_TEACHER)
    if not has_playback(run):
        raise gr.Error("No run to play back yet: generate an image first (Generate tab).")
    pb = run.playback
    checked = Checked()
    sample = checked.number(sample, "image", 0, pb.num_samples - 1, integer=True, default=0)
    step = checked.number(step, "step", 1, len(pb.records), integer=True, default=1)
    return pb, sample, step - 1


@answers_clearly
def scrub(run, sample, step):
    """Reads a recorded frame; never runs the model. The plot's marker follows the step."""
    if not has_playback(run):
        return gr.skip(), NEEDS_TEACHER if made_by_student(run) else "No run yet: generate an image first.", gr.skip()
    pb, sample, step = playback_position(run, sample, step)
    return pb.frame(step, sample), step_caption(pb, step, sample), playback_figure(pb, sample, step)


@answers_clearly
def pick_sample(ctx: Context, run, sample, step):
    if not has_playback(run):
        return gr.skip(), gr.skip(), gr.skip()
    run.playback_with_cosines(ctx.models.need_encoder())
    return scrub(run, sample, step)


@answers_clearly
def play(run, sample, step, fps=PLAY_FPS):
    """Step the slider through the recorded steps from where it stands (from the start when at the end), fps frames
    a second; each new value redraws through scrub. Pause cancels it."""
    pb, sample, step = playback_position(run, sample, step)
    fps = Checked().number(fps, "speed", *PLAY_FPS_RANGE, default=PLAY_FPS)
    start = 0 if step >= len(pb.records) - 1 else step
    for k in range(start, len(pb.records)):
        yield k + 1
        time.sleep(1 / fps)


@answers_clearly
def gif(ctx: Context, run, sample):
    pb, sample, _ = playback_position(run, sample, 1)
    return str(export_gif(pb, sample, ctx.outputs.path(".gif", gif_name(run, sample))))


def gif_name(run, sample: int) -> str:
    """The GIF's download name: what it shows, e.g. playback_a-deep-red-rose-flower_w2_seed7."""
    params = run.params[sample] if sample < len(getattr(run, "params", [])) else {}
    return "playback_" + file_name(params.get("prompt", "run"), params.get("w"), params.get("seed"))


@dataclass
class PlaybackTab:
    sample: gr.Dropdown
    play: gr.Button
    pause: gr.Button
    fps: gr.Slider
    gif: gr.Button
    step: gr.Slider
    caption: gr.Markdown
    frame: gr.Image
    plot: gr.Plot
    file: gr.File
    hint: gr.Markdown


def build(ctx: Context) -> PlaybackTab:
    with gr.Tab("Denoising playback", id="playback"):
        hint = gr.Markdown(HINT, elem_id="pb-hint")
        with gr.Row(equal_height=False, elem_id="pb-controls"):      # where a tour's landing puts the page
            sample = gr.Dropdown(choices=[], label="image", type="value", allow_custom_value=True,
                                 elem_id="pb-sample", scale=3)
            play_button = gr.Button("Play", elem_id="pb-play", scale=1, min_width=80)
            pause_button = gr.Button("Pause", elem_id="pb-pause", scale=1, min_width=80)
            fps = gr.Slider(*PLAY_FPS_RANGE, value=PLAY_FPS, step=1, label="speed (steps a second)", scale=2,
                            elem_id="pb-fps")
            gif_button = gr.Button("Export GIF", scale=1, min_width=100)
        step = gr.Slider(1, 2, value=1, step=1, label="recorded step (1: pure noise; the last: the image)",
                         elem_id="pb-step")
        with gr.Row(equal_height=False):
            with gr.Column(scale=7, min_width=400):    # six panels in a row: the wider side
                caption = gr.Markdown(elem_id="pb-caption")
                # the picture names its own panels (and the caption above lists them, negative x0 included): no
                # label badge or toolbar over those titles
                frame = gr.Image(label="recorded frame", show_label=False, buttons=[], type="pil", format="png",
                                 interactive=False, elem_id="pb-frame", elem_classes=["pixelated"],
                                 alt_text="The recorded step named above: the noisy x_t and the guided, conditional "
                                 "and unconditional x0 guesses side by side")
                file = gr.File(label="GIF", elem_id="pb-gif", height=90)
            with gr.Column(scale=5, min_width=400):
                plot = gr.Plot(show_label=False, elem_id="pb-plot")   # the figure has its own titles: no label
    return PlaybackTab(sample, play_button, pause_button, fps, gif_button, step, caption, frame, plot, file, hint)


def show_call(ctx: Context, tab: PlaybackTab, last_run: gr.State) -> Call:
    """What follows every new run: this tab shows it (and drops the previous run's GIF)."""
    return Call(bind(show_playback, ctx), last_run,
                [tab.sample, tab.step, tab.frame, tab.caption, tab.plot, tab.file, tab.hint], ctx.model_group)


def wire(ctx: Context, tab: PlaybackTab, shared: Shared) -> None:
    position = [shared.last_run, tab.sample, tab.step]
    quiet = {"show_progress": "hidden", **PRIVATE}
    shown = [tab.frame, tab.caption, tab.plot]
    Call(scrub, position, shown).on(tab.step.change, **quiet)
    Call(bind(pick_sample, ctx), position, shown).on(tab.sample.input, **quiet)
    playing = Call(play, [*position, tab.fps], tab.step).on(tab.play.click, **quiet)
    tab.pause.click(None, None, None, cancels=[playing])
    Call(bind(gif, ctx), [shared.last_run, tab.sample], tab.file).on(tab.gif.click, api_name="playback_gif")


def tour_fill(tab: PlaybackTab, then: tour.Playback) -> dict:
    return {}


def tour_steps(ctx: Context, tab: PlaybackTab, shared: Shared, then: tour.Playback) -> list[Call]:
    return []     # the run's Generate step already showed its run here (shared.after_run)
