"""The Interpolate and vary tab: the slerp between two prompts, a weighted mix of them, and variations of an image
(sampled from its CLIP image embedding), each from one seed."""
from __future__ import annotations

from dataclasses import dataclass

import gradio as gr
from PIL import Image

from ... import tour
from ...encoders import pil_to_tensor01
from ...images import read_params, save_png, to_pil
from ...interpolate import mix, slerp_path
from ...pipeline import REFERENCE_PROMPTS, Job
from ...sampling import to_uint8
from ..context import Context
from ..controls import SamplingControls, negative_box
from ..errors import answers_clearly, one_per_session
from ..inputs import Checked, open_upload, shorten, upload_path
from ..limits import (INTERPOLATION_POINTS, INTERPOLATION_POINTS_DEFAULT, MAX_IMAGES_PER_PROMPT, MIX_WEIGHT_DEFAULT,
                      PREVIEW_SCALE, VARIATIONS_DEFAULT)
from ..page import scroll_to
from ..runs import RunStatus, preview_gallery, sample, save_results, strip
from ..session import LastRun
from ..wiring import PRIVATE, Call, Shared, bind, on_stop

TAKES = (tour.Interpolate, tour.Mix, tour.Vary)


# -- handlers ------------------------------------------------------------------------------------------------------
def two_prompts(checked: Checked, prompt_a, prompt_b) -> tuple[str, str]:
    return checked.lines(prompt_a, 1, name="first prompt")[0], checked.lines(prompt_b, 1, name="second prompt")[0]


@answers_clearly
@one_per_session
def interpolate(ctx: Context, prompt_a, prompt_b, points, w, seed, steps, sampler, negative_prompt=""):
    """Images along the slerp between two prompts' embeddings, one seed for all (and one negative prompt)."""
    pipe = ctx.models.need_pipeline()
    checked = Checked()
    a, b = two_prompts(checked, prompt_a, prompt_b)
    n = checked.number(points, "images", *INTERPOLATION_POINTS, integer=True, default=INTERPOLATION_POINTS_DEFAULT)
    s = checked.sampling(w, seed, steps, sampler)
    ends = pipe.encoder.encode_text([a, b])
    fractions, path = slerp_path(ends[0], ends[1], n)
    negative = checked.negative(negative_prompt)
    jobs = [Job(f"{a} -> {b} @ {t:.2f}", s.w, s.seed, embedding=e, negative=negative)
            for t, e in zip(fractions, path)]
    s = checked.budget(s, len(jobs))
    run = checked.prepare(pipe, jobs, s)
    for row, frames in strip(ctx, pipe, run, [f"{t:.2f}" for t in fractions]):
        yield row, strip_status(checked, frames, f"{a!r} -> {b!r}", s), s.seed


@answers_clearly
@one_per_session
def mix_prompts(ctx: Context, prompt_a, prompt_b, weight, w, seed, steps, sampler, negative_prompt=""):
    """The first prompt, a weighted mix of both prompts' directions, the second prompt: one seed for all three."""
    pipe = ctx.models.need_pipeline()
    checked = Checked()
    a, b = two_prompts(checked, prompt_a, prompt_b)
    weight = checked.number(weight, "mix weight", 0, 1, default=MIX_WEIGHT_DEFAULT)
    s = checked.sampling(w, seed, steps, sampler)
    ends = pipe.encoder.encode_text([a, b])
    negative = checked.negative(negative_prompt)
    mixed = Job(f"{1 - weight:g} x {a} + {weight:g} x {b}", s.w, s.seed, embedding=mix(ends[0], ends[1], weight),
                negative=negative)
    jobs = [Job(a, s.w, s.seed, negative=negative), mixed, Job(b, s.w, s.seed, negative=negative)]
    s = checked.budget(s, len(jobs))
    run = checked.prepare(pipe, jobs, s)
    for row, frames in strip(ctx, pipe, run, [shorten(a, 40), f"mix, weight {weight:g}", shorten(b, 40)]):
        yield row, strip_status(checked, frames, f"{1 - weight:g} x {a!r} + {weight:g} x {b!r}", s), s.seed


def strip_status(checked: Checked, frames, what: str, s) -> RunStatus:
    """A strip's status: what it samples and how far it is, or where it stopped."""
    progress = f"step {frames.step} of {frames.total}" if not frames.done else f"Done, seed {s.seed}."
    return checked.status(f"{what}: {progress}", frames)


@answers_clearly
@one_per_session
def vary(ctx: Context, file, count, w, seed, steps, sampler, negative_prompt=""):
    """Condition on an uploaded image's CLIP image embedding: the model was trained on those."""
    pipe = ctx.models.need_pipeline()
    checked = Checked()
    image = open_upload(file, "image")
    n = checked.number(count, "variations", 1, MAX_IMAGES_PER_PROMPT, integer=True, default=VARIATIONS_DEFAULT)
    s = checked.sampling(w, seed, steps, sampler)
    emb = pipe.encoder.encode_image([image])[0]
    seen = to_pil(to_uint8(pil_to_tensor01([image], pipe.encoder.image_size) * 2 - 1)[0], PREVIEW_SCALE)
    negative = checked.negative(negative_prompt)
    jobs = [Job(variation_of(file), s.w, seed, embedding=emb, negative=negative) for seed in checked.seeds(s.seed, n)]
    s = checked.budget(s, len(jobs))
    run = checked.prepare(pipe, jobs, s)
    seen_sent = False
    for frames in sample(ctx, pipe, run):
        if frames.stopped:
            yield preview_gallery(frames), gr.skip() if seen_sent else seen, \
                checked.status("", frames), s.seed
        elif not frames.done:
            yield preview_gallery(frames), gr.skip() if seen_sent else seen, \
                checked.status(f"step {frames.step} of {frames.total}", frames), s.seed
            seen_sent = True
        else:
            gallery, _, _ = save_results(ctx, pipe, frames.images, run)
            yield gallery, seen, checked.status(f"Done: {n} variation(s).", frames), s.seed


def variation_of(file) -> str:
    """What the variations' captions say they vary: a clipdiff PNG (the tour's: the last Generate run's first image)
    by its prompt and seed, short enough for the caption's w and seed to follow; any other picture as uploaded."""
    params = {}
    if upload_path(file) is not None:
        with Image.open(upload_path(file)) as im:       # open_upload has checked that it is a picture
            params = read_params(im) or {}
    prompt = params.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        return "variation of an uploaded image"
    seed = f", seed {params['seed']}" if isinstance(params.get("seed"), int) else ""
    return f"variation of a generated image ({shorten(prompt.strip(), 32)!r}{seed})"


@answers_clearly
def first_generated_image(ctx: Context, run):
    """The last run's first image as a PNG (parameters inside), for the Variations input."""
    if not isinstance(run, LastRun):
        raise gr.Error("Generate an image first (Generate tab).")
    return str(save_png(to_pil(run.frames[0]), ctx.outputs.path(".png"), run.params[0]))


# -- layout and wiring ---------------------------------------------------------------------------------------------
@dataclass
class InterpolateTab:
    a: gr.Textbox
    b: gr.Textbox
    points: gr.Slider
    sampling: SamplingControls          # the slerp's and the mix's
    go: gr.Button
    stop: gr.Button
    status: gr.Markdown
    strip: gr.Image
    weight: gr.Slider
    mix: gr.Button
    mix_status: gr.Markdown
    mix_strip: gr.Image
    file: gr.File
    seen: gr.Image
    count: gr.Slider
    vary_sampling: SamplingControls
    vary: gr.Button
    vary_stop: gr.Button
    vary_status: gr.Markdown
    gallery: gr.Gallery
    negative: gr.Textbox                # the slerp's and the mix's
    vary_negative: gr.Textbox


def build(ctx: Context) -> InterpolateTab:
    with gr.Tab("Interpolate and vary", id="interpolate"):
        gr.Markdown("### Slerp between two prompts (one seed)")
        with gr.Row():
            a = gr.Textbox(REFERENCE_PROMPTS[0], label="from", info="Enter interpolates", elem_id="ip-a")
            b = gr.Textbox(REFERENCE_PROMPTS[2], label="to", elem_id="ip-b")
        with gr.Row():
            points = gr.Slider(*INTERPOLATION_POINTS, value=INTERPOLATION_POINTS_DEFAULT, step=1, label="images")
            sampling = SamplingControls.build(samplers=ctx.models.samplers)
        negative = negative_box(elem_id="ip-negative")
        with gr.Row():
            go = gr.Button("Interpolate", variant="primary", elem_id="ip-go")
            stop = gr.Button("Stop", variant="stop", elem_id="ip-stop")
        status = gr.Markdown(elem_id="ip-status")
        strip_image = gr.Image(label="slerp strip", type="pil", format="png", elem_id="ip-strip",
                               alt_text="Slerp strip from the first prompt's embedding to the second's, one seed for "
                               "every image; each column is labelled with how far along the path it is, from 0 to 1")
        gr.Markdown("### Weighted mix of the same two prompts (one seed)")
        with gr.Row():
            weight = gr.Slider(0, 1, value=MIX_WEIGHT_DEFAULT, step=0.05, label="weight of the second prompt",
                               info="0: the first prompt alone; 1: the second alone")
            mix_button = gr.Button("Mix", variant="primary", elem_id="mix-go")
        mix_status = gr.Markdown(elem_id="mix-status")
        mix_strip = gr.Image(label="first | mix | second", type="pil", format="png", elem_id="mix-strip",
                             alt_text="Three images from one seed: the first prompt alone, the weighted mix, the second "
                             "prompt alone")
        gr.Markdown("### Variations of an image (conditioned on its CLIP image embedding)")
        with gr.Row():
            file = gr.File(label="image", file_types=["image"], type="filepath")
            seen = gr.Image(label="what CLIP sees", type="pil", elem_classes=["pixelated"],
                            alt_text="The uploaded image as CLIP's image tower sees it, at its input size")
            with gr.Column():
                count = gr.Slider(1, MAX_IMAGES_PER_PROMPT, value=VARIATIONS_DEFAULT, step=1, label="variations")
                vary_sampling = SamplingControls.build(samplers=ctx.models.samplers)
                vary_negative = negative_box(elem_id="va-negative")
        with gr.Row():
            vary_button = gr.Button("Vary", variant="primary", elem_id="va-go")
            vary_stop = gr.Button("Stop", variant="stop", elem_id="va-stop")
        vary_status = gr.Markdown(elem_id="va-status")
        gallery = gr.Gallery(label="variations", columns=4, height="auto", object_fit="contain", format="png",
                             elem_id="va-gallery", elem_classes=["pixelated", "results"])   # sized as Generate's
    return InterpolateTab(a, b, points, sampling, go, stop, status, strip_image, weight, mix_button, mix_status,
                          mix_strip, file, seen, count, vary_sampling, vary_button, vary_stop, vary_status, gallery,
                          negative, vary_negative)


def interpolate_call(ctx: Context, tab: InterpolateTab) -> Call:
    s = tab.sampling
    return Call(bind(interpolate, ctx), [tab.a, tab.b, tab.points, s.w, s.seed, s.steps, s.sampler, tab.negative],
                [tab.strip, tab.status, s.seed], ctx.model_group, status=tab.status)


def mix_call(ctx: Context, tab: InterpolateTab) -> Call:
    s = tab.sampling
    return Call(bind(mix_prompts, ctx), [tab.a, tab.b, tab.weight, s.w, s.seed, s.steps, s.sampler, tab.negative],
                [tab.mix_strip, tab.mix_status, s.seed], ctx.model_group, status=tab.mix_status)


def vary_call(ctx: Context, tab: InterpolateTab) -> Call:
    s = tab.vary_sampling
    return Call(bind(vary, ctx), [tab.file, tab.count, s.w, s.seed, s.steps, s.sampler, tab.vary_negative],
                [tab.gallery, tab.seen, tab.vary_status, s.seed], ctx.model_group, status=tab.vary_status)


def wire(ctx: Context, tab: InterpolateTab, shared: Shared) -> None:
    interpolating = interpolate_call(ctx, tab).on(tab.go.click, api_name="interpolate")
    varying = vary_call(ctx, tab).on(tab.vary.click, api_name="vary")
    mixing = mix_call(ctx, tab).on(tab.mix.click, api_name="mix")
    for button, result in ((tab.go, "#ip-strip"), (tab.mix, "#mix-strip"), (tab.vary, "#va-gallery")):
        button.click(None, js=scroll_to(result), **PRIVATE)
    on_stop(ctx, tab.stop, [interpolating, mixing])      # one Stop for the slerp and the mix (one runs at a time)
    on_stop(ctx, tab.vary_stop, [varying])


# -- the tour ------------------------------------------------------------------------------------------------------
def tour_fill(tab: InterpolateTab, then: tour.Interpolate | tour.Mix | tour.Vary) -> dict:
    if isinstance(then, tour.Vary):
        return {tab.count: then.count, tab.vary_negative: "", **tab.vary_sampling.fill(then.sampling)}
    values = {tab.a: then.a, tab.b: then.b, tab.negative: "", **tab.sampling.fill(then.sampling)}
    values.update({tab.points: then.points} if isinstance(then, tour.Interpolate) else {tab.weight: then.weight})
    return values


def tour_steps(ctx: Context, tab: InterpolateTab, shared: Shared, then) -> list[Call]:
    if isinstance(then, tour.Interpolate):
        return [interpolate_call(ctx, tab)]
    if isinstance(then, tour.Mix):
        return [mix_call(ctx, tab)]
    first_image = Call(bind(first_generated_image, ctx), shared.last_run, tab.file,   # the Generate step's image
                       status=tab.vary_status)
    return [first_image, vary_call(ctx, tab)]
