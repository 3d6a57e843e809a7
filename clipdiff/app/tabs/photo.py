"""The Photo tab: what noise does to a real photo (the forward process q(x_t | x0)), editing a photo by noising it part
way and denoising it with a prompt (SDEdit, Meng et al. 2021), and DDIM inversion (the noise that makes the photo)."""
from __future__ import annotations

import time
from dataclasses import dataclass

import gradio as gr
import numpy as np
import torch

from ... import tour
from ...images import center_square, labelled_grid, to_pil
from ...inversion import round_trip
from ...pipeline import REFERENCE_PROMPTS, Job, photo_edits
from ...playback import playback_of_run
from ...sampling import Sampling, from_uint8, initial_noise, to_uint8
from ...schedulers import NoiseSchedule, alphas_cumprod, forward_noise as noised, signal_to_noise
from ..context import Context
from ..controls import SamplingControls, negative_box, seed_number
from ..errors import answers_clearly, one_per_session
from ..figures import schedule_figure
from ..inputs import Checked, open_upload, shorten
from ..limits import (EDIT_AT_DEFAULT, EDIT_STRIP, FORWARD_STRIP, INVERSION_STEPS, INVERSION_STEPS_DEFAULT,
                      MAX_TEXT_CHARS, PREVIEW_SCALE)
from ..runs import preview_gallery, sample, save_results
from ..session import LastRun
from ..wiring import PRIVATE, Call, Shared, after_finished, bind, on_stop

TAKES = (tour.ForwardNoise, tour.EditPhoto)
NO_PHOTO = ("Upload a photo, or generate an image first (Generate tab) and tick 'use my last generated image'. "
            "(The embedding atlas holds no pixels, only embeddings, so it has no photos to offer.)")


# -- handlers ------------------------------------------------------------------------------------------------------
def photo_of(ctx: Context, file, use_generated, run, checked: Checked) -> np.ndarray:
    """The picture to work on as the model sees it, (H, W, 3) uint8 at the model's size: the upload (centre-cropped
    and resized, as every picture enters a model) or, when asked and there is no upload, the last run's first image."""
    size = ctx.models.pipeline.image_size if ctx.models.pipeline is not None else 32
    if file is not None:
        return np.array(center_square(open_upload(file, "photo"), size))
    if checked.flag(use_generated, "use my last generated image") and isinstance(run, LastRun):
        return np.array(center_square(to_pil(run.frames[0]), size))
    raise gr.Error(NO_PHOTO)


def schedule_of(ctx: Context) -> NoiseSchedule:
    return ctx.models.pipeline.config.schedule if ctx.models.pipeline is not None else NoiseSchedule()


@answers_clearly
def forward_noise(ctx: Context, file, use_generated, t, seed, run=None):
    """x_t = sqrt(a_bar_t) x0 + sqrt(1 - a_bar_t) eps at the chosen t, and a strip over t with one seed's noise, so
    only the mix changes; a_bar_t and the signal-to-noise ratio over t with t marked. Needs no model."""
    checked = Checked()
    photo = photo_of(ctx, file, use_generated, run, checked)
    schedule = schedule_of(ctx)
    last = schedule.num_train_timesteps - 1
    t = checked.number(t, "t", 0, last, integer=True, default=last // 2)
    seed = checked.seed(seed)
    ts = sorted({round(f * last) for f in FORWARD_STRIP} | {t})
    x0 = from_uint8(photo[None])
    noise = initial_noise([seed], tuple(x0.shape[1:]))       # the seed's noise, the same at every t
    x_ts = to_uint8(noised(x0.expand(len(ts), -1, -1, -1), torch.tensor(ts), noise.expand(len(ts), -1, -1, -1),
                           schedule))
    a_bar, snr = alphas_cumprod(schedule), signal_to_noise(schedule)
    at = x_ts[ts.index(t)]
    strip = labelled_grid(x_ts, rows=1, cols=len(ts), col_labels=[f"t = {k}" + (" (yours)" if k == t else "")
                                                                  for k in ts])
    summary = (f"At t = {t} of {last}: x_t = **{a_bar[t].sqrt():.3f}** x0 + **{(1 - a_bar[t]).sqrt():.3f}** eps "
               f"(a_bar_t = {a_bar[t]:.4f}, SNR = {snr[t]:.3g}, seed {seed}). "
               f"Even at t = {last} a_bar_t is {a_bar[last]:.4f}, not 0: a trace of the photo is left; the samplers "
               "treat that last step as pure noise.")
    return to_pil(at, PREVIEW_SCALE * 2), strip, schedule_figure(a_bar.numpy(), snr.numpy(), t), \
        checked.status(summary), seed


@answers_clearly
@one_per_session
def edit_photo(ctx: Context, file, use_generated, prompt, at, w, seed, steps, sampler, negative_prompt="", run=None):
    """SDEdit: the photo noised to `at` of the way to pure noise (a fraction of T), then denoised with the prompt and
    w, streamed and recorded for playback like any run; then a strip of the same edit from several starts, one seed:
    near 0 it stays the photo, at 1 it is a plain generation of the prompt with that seed."""
    pipe = ctx.models.need_pipeline()
    checked = Checked()
    photo = photo_of(ctx, file, use_generated, run, checked)
    prompt = checked.lines(prompt, 1, name="prompt")[0]
    at = checked.number(at, "start (fraction of T)", 0, 1, default=EDIT_AT_DEFAULT)
    s = checked.sampling(w, seed, steps, sampler)
    s = checked.budget(s, 1 + len(EDIT_STRIP))
    negative = checked.negative(negative_prompt)
    x0 = from_uint8(photo[None])[0]
    prepared = checked.prepare(pipe, photo_edits(x0, prompt, s.w, s.seed, at, negative), s)
    label = f"{shorten(prompt)} from the photo at {at:g} T (seed {s.seed})"
    started = time.perf_counter()
    result = None
    for frames in sample(ctx, pipe, prepared, record=True):
        if frames.stopped:
            yield preview_gallery(frames), gr.skip(), checked.status("", frames), s.seed, gr.skip()
            return
        if not frames.done:
            status = checked.status(f"Editing: step {frames.step} of {frames.total}", frames)
            yield preview_gallery(frames), gr.skip(), status, s.seed, gr.skip()
            continue
        result = frames
    gallery, params, scores = save_results(ctx, pipe, result.images, prepared)
    gallery = [(to_pil(photo, PREVIEW_SCALE), "the photo, as the model sees it")] + gallery
    new_run = LastRun(result.images, [label], params, scores, playback_of_run(prepared, [label], result.records),
                      prepared.final)
    yield gallery, gr.skip(), checked.status(f"Edited in {time.perf_counter() - started:.1f} s; now the strip over "
                                             "the start...", result), s.seed, gr.skip()
    row = []
    for fraction in EDIT_STRIP:
        edit = checked.prepare(pipe, photo_edits(x0, prompt, s.w, s.seed, fraction, negative), s)
        for frames in sample(ctx, pipe, edit):
            if frames.stopped:
                yield gallery, gr.skip(), checked.status("The edit is done; the strip was stopped.", result), s.seed, \
                    new_run
                return
            if frames.done:
                row.append(frames.images[0])
    strip = labelled_grid(np.stack([photo] + row), rows=1, cols=1 + len(row),
                          col_labels=["photo"] + [f"from {f:g} T" for f in EDIT_STRIP])
    yield gallery, strip, checked.status(
        f"Done: {shorten(prompt)!r} from the photo noised to {at:g} of T, {s.steps} {s.sampler} steps (the edit takes "
        f"those below {at:g} T), seed {s.seed}, w {s.w:g}, CLIP score {scores[0]:.1f}. The strip: the same edit from "
        "other starts, the same seed; from 0 T it is the photo, from 1 T a plain generation that ignores the "
        "photo.", result), s.seed, new_run


@answers_clearly
def invert_photo(ctx: Context, file, use_generated, prompt, steps, run=None):
    """DDIM inversion: the photo walked up to x_T by deterministic DDIM steps run backwards (conditioned on the
    prompt, unguided), then back down from that x_T; the round trip's error in uint8 levels."""
    pipe = ctx.models.need_pipeline()
    checked = Checked()
    photo = photo_of(ctx, file, use_generated, run, checked)
    prompt = checked.lines(prompt, 1, name="prompt")[0]
    steps = checked.number(steps, "inversion steps", *INVERSION_STEPS, integer=True, default=INVERSION_STEPS_DEFAULT)
    cond = checked.prepare(pipe, [Job(prompt, 0.0, 0)], Sampling(steps=steps, sampler="ddim")).inputs.cond
    trip = round_trip(pipe.model, from_uint8(photo[None]), cond, steps, pipe.config.schedule)
    error = float(trip.error[0])
    pictures = np.stack([photo, to_uint8(trip.noise / 3)[0], to_uint8(trip.images)[0]])
    strip = labelled_grid(pictures, rows=1, cols=3, col_labels=["photo", "x_T found (shown / 3)", "DDIM from x_T"])
    return strip, checked.status(
        f"Round trip in {steps} DDIM steps each way: on average **{error:.1f}** uint8 levels from the photo (of 255); "
        f"x_T has standard deviation {trip.noise.std():.2f} (pure noise: 1). Each backward step assumes the "
        "noise prediction hardly changes over the step, so fewer steps drift further.")


# -- layout and wiring ---------------------------------------------------------------------------------------------
@dataclass
class PhotoTab:
    file: gr.File
    use_generated: gr.Checkbox
    t: gr.Slider
    noise_seed: gr.Number
    show: gr.Button
    at_t: gr.Image
    noise_strip: gr.Image
    plot: gr.Plot
    noise_status: gr.Markdown
    prompt: gr.Textbox
    at: gr.Slider
    sampling: SamplingControls
    negative: gr.Textbox
    edit: gr.Button
    stop: gr.Button
    edit_status: gr.Markdown
    gallery: gr.Gallery
    edit_strip: gr.Image
    inversion_steps: gr.Slider
    invert: gr.Button
    inversion: gr.Image
    inversion_status: gr.Markdown


def build(ctx: Context) -> PhotoTab:
    last = schedule_of(ctx).num_train_timesteps - 1
    with gr.Tab("Noise and edit a photo", id="photo"):
        with gr.Row():
            file = gr.File(label="photo (centre-cropped to the model's 32 x 32)", file_types=["image"],
                           type="filepath", height=120)
            use_generated = gr.Checkbox(True, label="use my last generated image when no photo is uploaded")
        gr.Markdown("### The forward process: x_t = sqrt(a_bar_t) x0 + sqrt(1 - a_bar_t) eps")
        with gr.Row():
            t = gr.Slider(0, last, value=last // 2, step=1, label="timestep t", elem_id="fw-t")
            noise_seed = seed_number("noise seed (the same noise at every t)")
            show = gr.Button("Add noise", variant="primary", elem_id="fw-go")
        noise_status = gr.Markdown(elem_id="fw-status")
        with gr.Row(equal_height=False):
            at_t = gr.Image(label="x_t", type="pil", format="png", elem_classes=["pixelated"], elem_id="fw-image",
                            scale=1, alt_text="The photo noised to the timestep t above (x_t)")
            plot = gr.Plot(elem_id="fw-plot", scale=3)
        noise_strip = gr.Image(label="the photo over t, one seed's noise", type="pil", format="png",
                               elem_id="fw-strip", alt_text="The photo noised to a row of timesteps t with one "
                               "seed's noise, each column labelled with its t")
        gr.Markdown("### Edit the photo (SDEdit): noise it part way, then denoise it with a prompt")
        with gr.Row():
            prompt = gr.Textbox(REFERENCE_PROMPTS[1], label="prompt", max_length=MAX_TEXT_CHARS, elem_id="ed-prompt")
            at = gr.Slider(0, 1, value=EDIT_AT_DEFAULT, step=0.05, label="start: fraction of T",
                           info="0: the photo as it is; 1: pure noise (a plain generation)", elem_id="ed-at")
        with gr.Row():
            sampling = SamplingControls.build(samplers=ctx.models.samplers)
        negative = negative_box(elem_id="ed-negative")
        with gr.Row():
            edit = gr.Button("Edit", variant="primary", elem_id="ed-go")
            stop = gr.Button("Stop", variant="stop", elem_id="ed-stop")
        edit_status = gr.Markdown(elem_id="ed-status")
        gallery = gr.Gallery(label="photo and edit (PNG carries its parameters)", columns=4, height="auto",
                             object_fit="contain", format="png", elem_id="ed-gallery",
                             elem_classes=["pixelated", "results"])
        edit_strip = gr.Image(label="faithful to the photo ... faithful to the prompt", type="pil", format="png",
                              elem_id="ed-strip", alt_text="SDEdit strip: the photo edited with the prompt from a row "
                              "of starting points, from faithful to the photo to faithful to the prompt")
        gr.Markdown("### DDIM inversion: the noise that makes this photo")
        with gr.Row():
            inversion_steps = gr.Slider(*INVERSION_STEPS, value=INVERSION_STEPS_DEFAULT, step=1,
                                        label="DDIM steps each way")
            invert = gr.Button("Invert and back", variant="primary", elem_id="inv-go")
        inversion_status = gr.Markdown(elem_id="inv-status")
        inversion = gr.Image(label="photo -> x_T -> photo", type="pil", format="png", elem_id="inv-strip",
                             alt_text="DDIM inversion: the photo, the noise x_T it inverts to, and the photo "
                             "sampled back from that noise")
    return PhotoTab(file, use_generated, t, noise_seed, show, at_t, noise_strip, plot, noise_status, prompt, at,
                    sampling, negative, edit, stop, edit_status, gallery, edit_strip, inversion_steps, invert,
                    inversion, inversion_status)


def forward_call(ctx: Context, tab: PhotoTab, shared: Shared) -> Call:
    return Call(bind(forward_noise, ctx), [tab.file, tab.use_generated, tab.t, tab.noise_seed, shared.last_run],
                [tab.at_t, tab.noise_strip, tab.plot, tab.noise_status, tab.noise_seed], status=tab.noise_status)


def edit_call(ctx: Context, tab: PhotoTab, shared: Shared) -> Call:
    s = tab.sampling
    return Call(bind(edit_photo, ctx), [tab.file, tab.use_generated, tab.prompt, tab.at, s.w, s.seed, s.steps,
                                        s.sampler, tab.negative, shared.last_run],
                [tab.gallery, tab.edit_strip, tab.edit_status, s.seed, shared.last_run], ctx.model_group,
                status=tab.edit_status)


def wire(ctx: Context, tab: PhotoTab, shared: Shared) -> None:
    forward_call(ctx, tab, shared).on(tab.show.click, api_name="forward_noise")
    forward_call(ctx, tab, shared).on(tab.t.release, show_progress="hidden", **PRIVATE)
    editing = edit_call(ctx, tab, shared).on(tab.edit.click, api_name="edit_photo")
    after_finished(editing, tab.edit_status, shared)
    on_stop(ctx, tab.stop, [editing])
    Call(bind(invert_photo, ctx), [tab.file, tab.use_generated, tab.prompt, tab.inversion_steps, shared.last_run],
         [tab.inversion, tab.inversion_status], ctx.model_group, status=tab.inversion_status).on(
        tab.invert.click, api_name="invert_photo")


# -- the tour ------------------------------------------------------------------------------------------------------
def tour_fill(tab: PhotoTab, then: tour.ForwardNoise | tour.EditPhoto) -> dict:
    values = {tab.file: None, tab.use_generated: True}
    if isinstance(then, tour.ForwardNoise):
        return {**values, tab.t: then.t, tab.noise_seed: then.seed}
    return {**values, tab.prompt: then.prompt, tab.at: then.at, tab.negative: "", **tab.sampling.fill(then.sampling)}


def tour_steps(ctx: Context, tab: PhotoTab, shared: Shared, then) -> list[Call]:
    if isinstance(then, tour.ForwardNoise):
        return [forward_call(ctx, tab, shared)]
    return [edit_call(ctx, tab, shared), *shared.after_run]
