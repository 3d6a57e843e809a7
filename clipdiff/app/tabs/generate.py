"""The Generate tab: prompts and their tokens (live), the sampling controls, previews while sampling, PNGs that carry
their parameters and load back into the controls."""
from __future__ import annotations

import random
import time
from dataclasses import dataclass

import gradio as gr
import numpy as np
from open_clip.tokenizer import SimpleTokenizer

from ... import tour
from ...caveats import steps_of
from ...pipeline import REFERENCE_PROMPTS, images_per_prompt
from ...playback import PlaybackRun, playback_of_run
from ...prompts import edit_text
from ...sampling import Sampling
from ...schedulers import STUDENT_SAMPLERS, sampler_spec
from ...vocabulary import RARE_BELOW
from ...vocabulary import chips as vocabulary_chips
from ..context import Context
from ..controls import (SamplingControls, negative_box, sampler_radio, seed_number, steps_for_sampler, steps_slider,
                        w_slider)
from ..errors import answers_clearly, one_per_session
from ..inputs import Checked, clean_line, png_parameters, shorten
from ..links import ABSOLUTE_LINK, COPY_LINK, fill_from_link, link_query
from ..limits import (DEFAULT_SAMPLER, DEFAULT_STEPS, IMAGES_PER_PROMPT, MAX_BATCH, MAX_IMAGES_PER_PROMPT,
                      MAX_PROMPTS, MAX_TEXT_CHARS, SAMPLERS, SEED_RANGE)
from ..runs import preview_gallery, sample, save_results, score_note
from ..session import LastRun
from ..page import SHOW_RESULTS
from ..wiring import PRIVATE, Call, Shared, after_finished, bind, on_stop

TAKES = (tour.Generate,)
TOKEN_COLOURS = {"a": "#c7e0ff", "b": "#ffe3b3", "unknown": "#ff8a8a", "rare": "#ffc44d"}


# -- handlers ------------------------------------------------------------------------------------------------------
@answers_clearly
def show_tokens(ctx: Context, text):
    """The tokens each prompt becomes, a warning for any prompt longer than the context, and the words the
    training captions never (or rarely) use: the model cannot know what they mean."""
    encoder = ctx.models.encoder
    if encoder is None:
        return [], ctx.models.missing("CLIP model")
    if isinstance(text, str) and len(text) > MAX_TEXT_CHARS:
        return [], f"**Too long:** {len(text):,} characters; the limit is {MAX_TEXT_CHARS:,}."
    lines = Checked(quiet=True).lines(text if isinstance(text, str) else "", MAX_PROMPTS, required=False)
    pieces, summary = [], []
    for n, line in enumerate(lines, start=1):
        view = encoder.tokenize(line)
        chips, unknown, rare = token_chips(encoder, ctx.models.vocabulary, line, view)
        pieces += chips + [("\n", None)]
        summary.append(f"Prompt {n}: **{view.count} / {view.context_length}** tokens; ids "
                       f"`{' '.join(map(str, view.ids))}`")
        if view.truncated:
            kept = view.kept_text.replace("`", "'")
            summary.append(f"  - **Warning: truncated.** Only the first {view.context_length} tokens "
                           f"reach the model; it reads: `{kept}`")
        if unknown or rare:
            summary.append("  - " + words_note(unknown, rare))
    return pieces, "\n".join(f"- {s}" if not s.startswith("  ") else s for s in summary) or "No prompt yet."


def token_chips(encoder, vocabulary, line: str, view) -> tuple[list, list[str], list[tuple[str, int]]]:
    """One prompt's chips, coloured in turn, or red / amber for words the training captions never / rarely use
    (vocabulary.RARE_BELOW); and those words. Without a vocabulary or CLIP's own tokenizer: the plain pieces."""
    if vocabulary is None or not isinstance(encoder.tokenizer, SimpleTokenizer):
        return [(p, "ab"[i % 2]) for i, p in enumerate(view.pieces)], [], []
    chips = vocabulary_chips(encoder.tokenizer, line, view.context_length - 2)
    marked = [vocabulary.rarity(c.word) for c in chips]
    pieces = [("<start>", "a")] + [(c.text, mark or "ab"[(i + 1) % 2])
                                  for i, (c, mark) in enumerate(zip(chips, marked))]
    pieces.append(("<end>", "ab"[(len(chips) + 1) % 2]))
    unknown = list(dict.fromkeys(c.word for c, m in zip(chips, marked) if m == "unknown"))
    rare = list(dict.fromkeys((c.word, vocabulary.seen(c.word)) for c, m in zip(chips, marked) if m == "rare"))
    return pieces, unknown, rare


def words_note(unknown: list[str], rare: list[tuple[str, int]]) -> str:
    parts = []
    if unknown:
        parts.append("**Never in the training captions** (red): " + ", ".join(f"`{w}`" for w in unknown) +
                     ". The model cannot know these words: they barely steer the picture, which is why prompts in "
                     "other languages all look alike.")
    if rare:
        parts.append(f"**Rare** (amber, fewer than {RARE_BELOW} times): " +
                     ", ".join(f"`{w}` ({n}x)" for w, n in rare) + ".")
    return " ".join(parts)


def random_seed() -> int:
    return random.randint(*SEED_RANGE)


@answers_clearly
@one_per_session
def generate(ctx: Context, prompts_text, w, steps, sampler, seed, n_images, negative_prompt=""):
    """Stream previews of the guided x0 while sampling, then the final PNGs (parameters inside), and keep the run
    (images, parameters, recorded steps) as the session's last run; stopped, the last previews marked unfinished. A
    prompt may switch part way ([from:to:when]); a negative prompt replaces the learned null in guidance."""
    pipe = ctx.models.need_pipeline()
    checked = Checked()
    prompts = checked.lines(prompts_text, MAX_PROMPTS)
    s = checked.sampling(w, seed, steps, sampler)
    n = images_each(checked, prompts, n_images)
    checked.seeds(s.seed, n)
    for p in prompts:
        view = pipe.encoder.tokenize(p)
        if view.truncated:
            checked.warn(f"Prompt truncated to {view.context_length} tokens: {view.kept_text[:60]!r}...")
    jobs = images_per_prompt(prompts, s.w, s.seed, n, checked.negative(negative_prompt))
    s = checked.budget(s, len(jobs))
    run = checked.prepare(pipe, jobs, s)
    labels = [f"{shorten(j.text)} (seed {j.seed})" for j in run.jobs]
    started = time.perf_counter()
    for frames in sample(ctx, pipe, run, record=True):
        if frames.stopped:
            yield preview_gallery(frames), checked.status("", frames), s.seed, gr.skip()
            return
        if not frames.done:
            status = checked.status(f"Sampling: step {frames.step} of {frames.total}", frames)
            yield preview_gallery(frames), status, s.seed, gr.skip()
            continue
        gallery, params, scores = save_results(ctx, pipe, frames.images, run)
        last = LastRun(frames.images, labels, params, scores, playback_of_run(run, labels, frames.records), run.final)
        best = int(np.argmax(scores))
        yield gallery, checked.status(f"Done: {len(jobs)} image(s), seed {s.seed}, {steps_of(s.steps, s.sampler)} "
                                      f"in {time.perf_counter() - started:.1f} s. "
                                      f"Best CLIP score: {scores[best]:.1f} ({shorten(labels[best])}). "
                                      f"{score_note(run)}{fast_note(s.sampler)}", frames), s.seed, last


def fast_note(sampler: str) -> str:
    """What a fast-mode run's status adds: what made it, and what it leaves out."""
    if not sampler_spec(sampler).student:
        return ""
    return (" Fast mode: a student distilled from the U-Net made these, one forward a step; its steps are not "
            "recorded, so the Denoising playback needs the teacher's samplers.")


def images_each(checked: Checked, prompts: list[str], n_images) -> int:
    """Images per prompt, lowered so that one run makes at most MAX_BATCH."""
    n = checked.number(n_images, "number of images", 1, MAX_IMAGES_PER_PROMPT, integer=True, default=1)
    if n * len(prompts) > MAX_BATCH:
        n = max(1, MAX_BATCH // len(prompts))
        checked.warn(f"At most {MAX_BATCH} images per run: making {n} per prompt.")
    return n


@answers_clearly
def steps_used(prompts_text, steps, n_images):
    """The steps a click of Generate will use, put into the steps control when the per-run budget lowers them, as
    the seed used is. generate's own checks, quietly (generate says what it changed, and refuses what it refuses);
    nothing to change: the control stays."""
    checked = Checked(quiet=True)
    try:
        prompts = checked.lines(prompts_text, MAX_PROMPTS)
        s = checked.budget(Sampling(steps=checked.steps(steps)), len(prompts) * images_each(checked, prompts, n_images))
    except gr.Error:
        return gr.skip()
    return s.steps if s.steps != steps else gr.skip()


@answers_clearly
def load_params(file):
    """Fill the Generate controls from a PNG that clipdiff made (its parameters ride in PNG text)."""
    if file is None:
        return [gr.skip()] * 6
    return parameters_to_controls(png_parameters(file), Checked())


def parameters_to_controls(params: dict, checked: Checked):
    """A PNG's parameters as the Generate controls' values, checked like any request (a PNG can carry anything)."""
    prompt = prompt_of(params, checked)
    w = checked.w(params.get("w"))
    steps = checked.steps(params.get("steps"))
    sampler = params.get("sampler") if params.get("sampler") in SAMPLERS else DEFAULT_SAMPLER
    if params.get("sampler") in STUDENT_SAMPLERS:
        # The controls of an app without the fast mode cannot hold its sampler (a Radio refuses a value it does not
        # offer at the next click): the teacher's default comes back, with its own steps, and says so.
        steps = DEFAULT_STEPS
        checked.warn(f"Made in the fast mode: loaded with the teacher's {DEFAULT_SAMPLER} sampler and {steps} steps "
                     "(pick fast again where the app offers it).")
    seed = checked.number(params.get("seed"), "seed", *SEED_RANGE, integer=True, default=0)
    gr.Info(f"Loaded the parameters of {prompt[:40]!r}, seed {seed}.")
    return prompt, w, steps, sampler, seed, 1


def prompt_of(params: dict, checked: Checked) -> str:
    """A PNG's prompt as the prompt box holds it: a switch as [from:to:when]."""
    prompt = checked.lines(str(params.get("prompt", "")), 1)[0]
    if params.get("switch_to") is None:
        return prompt
    switch_at = checked.number(params.get("switch_at"), "switch fraction", 0, 1, default=1.0)
    return edit_text(prompt, clean_line(str(params["switch_to"])), switch_at) or prompt


@answers_clearly
def load_negative(file):
    """The negative prompt of a PNG that clipdiff made, for the negative box (none: empty); the parameters' own
    checks and messages are load_params's."""
    try:
        params = png_parameters(file)
    except gr.Error:
        return gr.skip()
    return clean_line(str(params.get("negative_prompt", "")))[:MAX_TEXT_CHARS]


@answers_clearly
def reuse_negative(run, index):
    if not isinstance(run, LastRun) or not isinstance(index, int) or not 0 <= index < len(run.params):
        return gr.skip()
    return run.params[index].get("negative_prompt", "")


def remember_selection(evt: gr.SelectData):
    return evt.index if isinstance(evt.index, int) else None


@answers_clearly
def reuse_selected(run, index):
    if not isinstance(run, LastRun) or not isinstance(index, int) or not 0 <= index < len(run.params):
        raise gr.Error("Click one of the last run's images first.")
    return parameters_to_controls(run.params[index], Checked())


# -- layout and wiring ---------------------------------------------------------------------------------------------
@dataclass
class PublishRow:
    """Under the results: publish the session's last run to the room's wall (the Wall tab wires them)."""
    best: gr.Button
    all: gr.Button
    status: gr.Markdown


def build_publish(ctx: Context) -> PublishRow:
    """The publish buttons; hidden when the server has no wall."""
    with gr.Row(visible=ctx.wall is not None):
        best = gr.Button("Publish best to the wall", size="sm", elem_id="publish-best")
        every = gr.Button("Publish all to the wall", size="sm", elem_id="publish-all")
    status = gr.Markdown(elem_id="publish-status")
    return PublishRow(best, every, status)


@dataclass
class GenerateTab:
    prompts: gr.Textbox
    tokens: gr.HighlightedText
    token_summary: gr.Markdown
    sampling: SamplingControls
    dice: gr.Button
    n_images: gr.Slider
    go: gr.Button
    stop: gr.Button
    status: gr.Markdown
    gallery: gr.Gallery
    reuse: gr.Button
    png_in: gr.File
    selected: gr.State
    negative: gr.Textbox
    link: gr.Textbox
    copy_link: gr.Button
    publish: PublishRow

    @property
    def controls(self) -> list:
        """What a PNG's parameters fill (/load_params), in generate's order."""
        s = self.sampling
        return [self.prompts, s.w, s.steps, s.sampler, s.seed, self.n_images]

    @property
    def inputs(self) -> list:
        """generate's inputs: the controls, then the negative prompt (last, so positional API calls still work)."""
        return [*self.controls, self.negative]


READY = "Results appear here, beside the controls: press **Generate** (or Ctrl+Enter in the prompt box)."


def build(ctx: Context) -> GenerateTab:
    """What you ask on the left, what you get on the right: on a 1280 x 800 laptop screen the status and the newest
    images are in view next to the Generate button, without scrolling."""
    context_length = ctx.models.encoder.context_length if ctx.models.encoder is not None else 77
    with gr.Tab("Generate", id="generate"):
        with gr.Row(equal_height=False):
            with gr.Column(scale=5, min_width=400):
                prompts = gr.Textbox(label="Prompts (one per line)", lines=3,
                                     max_length=MAX_TEXT_CHARS, value=REFERENCE_PROMPTS[2], elem_id="prompts",
                                     info="Ctrl+Enter generates; [from:to:when] switches prompts part way, e.g. "
                                          "[a daisy:a sunflower:0.5]")
                negative = negative_box(elem_id="negative")
                with gr.Row():
                    go = gr.Button("Generate", variant="primary", elem_id="generate")
                    stop = gr.Button("Stop", variant="stop", elem_id="stop")
                tokens = gr.HighlightedText(label=f"Tokens (context length {context_length})",
                                            color_map=TOKEN_COLOURS, show_inline_category=False, elem_id="tokens")
                token_summary = gr.Markdown(elem_id="token-summary")
                w = w_slider("guidance w", info="eps = (1 + w) eps_cond - w eps_uncond; w = -1 is unconditional")
                steps = steps_slider()
                with gr.Row():
                    seed = seed_number("seed (the seed used is shown here)", scale=3)
                    dice = gr.Button("Random", scale=1)
                n_images = gr.Slider(1, MAX_IMAGES_PER_PROMPT, value=IMAGES_PER_PROMPT, step=1,
                                     label="images per prompt")
                sampler = sampler_radio(ctx.models.samplers)
                gr.Examples([[p] for p in REFERENCE_PROMPTS] + [["\n".join(REFERENCE_PROMPTS)]],
                            inputs=[prompts], label="Reference prompts")
            with gr.Column(scale=6, min_width=400, elem_id="results"):
                status = gr.Markdown(READY, elem_id="status")
                gallery = gr.Gallery(label="Results (PNGs carry their parameters; click one, then 'Use parameters')",
                                     columns=4, height="auto", object_fit="contain", format="png",
                                     allow_preview=True, interactive=False, elem_id="gallery",
                                     elem_classes=["pixelated", "results"])
                with gr.Row():
                    link = gr.Textbox(label="share link: opens the app with these settings; Generate makes the same "
                                            "pictures", interactive=False, elem_id="share-link", scale=4)
                    copy_link = gr.Button("Copy link", elem_id="copy-link", scale=1)
                publish = build_publish(ctx)
                reuse = gr.Button("Use parameters of the selected image")
                png_in = gr.File(label="...or load parameters from a clipdiff PNG", file_types=[".png"],
                                 type="filepath", height=120, elem_id="png-in")
        selected = gr.State(None)
    return GenerateTab(prompts, tokens, token_summary, SamplingControls(w, seed, steps, sampler), dice, n_images,
                       go, stop, status, gallery, reuse, png_in, selected, negative, link, copy_link, publish)


def run_call(ctx: Context, tab: GenerateTab, shared: Shared) -> Call:
    s = tab.sampling
    return Call(bind(generate, ctx), tab.inputs, [tab.gallery, tab.status, s.seed, shared.last_run],
                ctx.model_group, status=tab.status)


def wire(ctx: Context, tab: GenerateTab, shared: Shared) -> None:
    tokens = Call(bind(show_tokens, ctx), [tab.prompts], [tab.tokens, tab.token_summary])
    tokens.on(tab.prompts.change, api_name="tokens", show_progress="hidden")
    tokens.on(shared.demo.load, **PRIVATE)
    tab.dice.click(random_seed, None, tab.sampling.seed, queue=False, **PRIVATE)
    if any(name in ctx.models.samplers for name in STUDENT_SAMPLERS):    # the fast mode's 1-8 steps vs the teacher's
        tab.sampling.sampler.change(steps_for_sampler, [tab.sampling.sampler, tab.sampling.steps],
                                    tab.sampling.steps, queue=False, **PRIVATE)
    event = run_call(ctx, tab, shared).on(tab.go.click, api_name="generate")
    Call(steps_used, [tab.prompts, tab.sampling.steps, tab.n_images], tab.sampling.steps).on(
        tab.go.click, show_progress="hidden", **PRIVATE)
    tab.go.click(None, js=SHOW_RESULTS, **PRIVATE)
    after_finished(event, tab.status, shared)
    s = tab.sampling    # the link of a finished run: its controls, the seed used included
    Call(link_query, [tab.prompts, tab.negative, s.w, s.steps, s.sampler, s.seed, tab.n_images], tab.link).on(
        event.success, show_progress="hidden", **PRIVATE).then(None, tab.link, tab.link, js=ABSOLUTE_LINK, **PRIVATE)
    tab.copy_link.click(None, tab.link, tab.link, js=COPY_LINK, **PRIVATE)
    Call(fill_from_link, None, tab.inputs).on(shared.demo.load, show_progress="hidden", **PRIVATE)
    on_stop(ctx, tab.stop, [event])
    Call(remember_selection, None, tab.selected).on(tab.gallery.select, **PRIVATE)
    Call(reuse_selected, [shared.last_run, tab.selected], tab.controls, status=tab.status).on(tab.reuse.click,
                                                                                              **PRIVATE)
    Call(load_params, tab.png_in, tab.controls, status=tab.status).on(tab.png_in.upload, api_name="load_params")
    Call(reuse_negative, [shared.last_run, tab.selected], tab.negative).on(tab.reuse.click, **PRIVATE)
    Call(load_negative, tab.png_in, tab.negative).on(tab.png_in.upload, **PRIVATE)


# -- the tour ------------------------------------------------------------------------------------------------------
def tour_fill(tab: GenerateTab, g: tour.Generate) -> dict:
    return {tab.prompts: "\n".join(g.prompts), tab.n_images: g.images_per_prompt, tab.negative: g.negative,
            **tab.sampling.fill(g.sampling)}


def tour_steps(ctx: Context, tab: GenerateTab, shared: Shared, g: tour.Generate) -> list[Call]:
    return [run_call(ctx, tab, shared), *shared.after_run]
