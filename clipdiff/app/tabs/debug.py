"""The Debug a prompt tab: when does the picture commit (prompt editing: prompt A until a fraction f of the steps,
then prompt B, one image per f from one seed), and which words matter (each word dropped in turn, re-encoded, and
drawn from the same seed). The negative prompt, the third question, lives beside the prompt in the sampling tabs."""
from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from ... import tour
from ...images import data_uri, labelled_grid
from ...pipeline import REFERENCE_PROMPTS, prompt_edits
from ...playback import playback_of_run
from ...sampling import from_uint8, switch_step
from ...similarity import clip_score
from ...wording import WordImportance, ablation_jobs, measure, split_words
from ..context import Context
from ..controls import SamplingControls
from ..errors import answers_clearly, one_per_session
from ..inputs import Checked, shorten
from ..limits import MAX_ABLATED_WORDS, PROMPT_EDIT_FRACTIONS
from ..runs import sample, save_results
from ..session import LastRun
from ..wiring import PRIVATE, Call, Shared, after_finished, bind, on_stop

TAKES = (tour.PromptEdit, tour.Words)
WORDS_PROMPT = "A deep red rose flower with a yellow center"
FRACTIONS_TEXT = ", ".join(f"{f:g}" for f in PROMPT_EDIT_FRACTIONS)


# -- handlers ------------------------------------------------------------------------------------------------------
def edit_inputs(checked: Checked, prompt_a, prompt_b, fractions_text, steps: int) -> tuple[str, str, list[float]]:
    """The two prompts and the switch fractions. Prompt A may hold a whole [from:to:when] instead: its two prompts,
    and its when joins the fractions."""
    a = checked.lines(prompt_a, 1, name="prompt A")[0]
    b = checked.lines(prompt_b, 1, name="prompt B", required=False)
    fractions = checked.fractions(fractions_text)
    edit = checked.edit(a, "prompt A")
    if edit.switches:
        if b:
            raise gr.Error("Give prompt B in its own box or inside prompt A's [from:to:when], not both.")
        fractions = sorted({*fractions, edit.fraction(steps)})
        return edit.before, edit.after, fractions
    if not b:
        raise gr.Error("Type prompt B (what the picture switches to), or write prompt A as [from:to:when].")
    if checked.edit(b[0], "prompt B").switches:
        raise gr.Error("Prompt B is what the run switches to; only prompt A may hold a [from:to:when].")
    return a, b[0], fractions


def scores_against(pipe, images, text_emb) -> list[list[float]]:
    """Per text embedding (raw CLIP, (T, D)), the CLIP score of every image against it."""
    image_emb = pipe.encoder.encode_image(from_uint8(images))
    return [clip_score(image_emb, e.expand(len(images), -1)).tolist() for e in text_emb]


@answers_clearly
@one_per_session
def prompt_edit(ctx: Context, prompt_a, prompt_b, fractions_text, seed, w, steps, sampler):
    """One image per switch fraction f, all from one seed: prompt A for the first f of the steps, then prompt B
    (f = 0: B alone; f = 1: A alone). Recorded for playback like any run; the PNGs carry the switch."""
    pipe = ctx.models.need_pipeline()
    checked = Checked()
    s = checked.sampling(w, seed, steps, sampler)
    a, b, fractions = edit_inputs(checked, prompt_a, prompt_b, fractions_text, s.steps)
    jobs = prompt_edits(a, b, fractions, s.w, s.seed)
    s = checked.budget(s, len(jobs))
    run = checked.prepare(pipe, jobs, s)
    columns = [f"f = {f:.2g}" for f in fractions]
    for frames in sample(ctx, pipe, run, record=True):
        strip = labelled_grid(frames.images, rows=1, cols=len(jobs), col_labels=columns)
        if frames.stopped:
            yield strip, gr.skip(), checked.status("", frames), s.seed, gr.skip()
            return
        if not frames.done:
            yield strip, gr.skip(), checked.status(f"Sampling: step {frames.step} of {frames.total}", frames), s.seed, \
                gr.skip()
            continue
        gallery, params, scores = save_results(ctx, pipe, frames.images, run)
        labels = [f"f = {f:.2g} (seed {j.seed})" for f, j in zip(fractions, jobs)]
        last = LastRun(frames.images, labels, params, scores, playback_of_run(run, labels, frames.records), run.final)
        against = scores_against(pipe, frames.images, run.text_embeddings([a, b]))
        yield strip, gallery, checked.status(switch_summary(a, b, fractions, against, s), frames), s.seed, last


def switch_summary(a: str, b: str, fractions: list[float], scores: list[list[float]], s) -> str:
    rows = "\n".join(f"| {f:.2g} | {switch_step(f, s.steps)} of {s.steps} | {sa:.1f} | {sb:.1f} |"
                     for f, sa, sb in zip(fractions, *scores))
    return (f"Done, seed {s.seed}: {shorten(a, 40)!r} for the first f of the steps, then {shorten(b, 40)!r}. "
            f"CLIP score of each picture against either prompt:\n\n| f | steps on A | A | B |\n| --- | --- | --- | --- |"
            f"\n{rows}")


@answers_clearly
@one_per_session
def word_importance(ctx: Context, prompt, seed, w, steps, sampler):
    """Drop each word in turn: the cosine between the full and the shorter prompt's text embeddings, and the
    same-seed image without the word with its CLIP score against the full prompt. One batched run."""
    pipe = ctx.models.need_pipeline()
    checked = Checked()
    text = checked.lines(prompt, 1, name="prompt")[0]
    if checked.edit(text).switches:
        raise gr.Error("Word importance reads one prompt: take the [from:to:when] out (try each side alone).")
    s = checked.sampling(w, seed, steps, sampler)
    count = len(split_words(text))
    if count > MAX_ABLATED_WORDS:
        checked.warn(f"{count} words: dropping only the first {MAX_ABLATED_WORDS}, one at a time (the rest stay).")
    words, jobs = ablation_jobs(text, s.w, s.seed, MAX_ABLATED_WORDS)
    s = checked.budget(s, len(jobs))
    run = checked.prepare(pipe, jobs, s)
    columns = ["all words"] + [f"without {shorten(word, 16)}" for word in words]
    for frames in sample(ctx, pipe, run):
        strip = labelled_grid(frames.images, rows=1, cols=len(jobs), col_labels=columns, cell=80)
        if frames.stopped:
            yield gr.skip(), strip, gr.skip(), checked.status("", frames), s.seed
            return
        if not frames.done:
            yield gr.skip(), strip, gr.skip(), checked.status(f"Sampling {len(jobs)} images: step {frames.step} "
                                                              f"of {frames.total}", frames), s.seed
            continue
        result = measure(pipe, words, run, frames.images)
        status = checked.status(word_summary(result, s), frames)
        yield shaded(result, split_words(text)), strip, as_json(result), status, s.seed


def shaded(result: WordImportance, all_words: list[str]) -> list[tuple[str, float | None]]:
    """The prompt word by word, each shaded by how far dropping it moves the embedding (the largest: 1); words
    past the ones tried are not shaded."""
    top = max(max(result.text_effect), 1e-6)
    scores = [max(e, 0.0) / top for e in result.text_effect] + [None] * (len(all_words) - len(result.words))
    return [(word + " ", None if score is None else round(score, 3)) for word, score in zip(all_words, scores)]


def as_json(result: WordImportance) -> dict:
    """What API clients get: the figures, and the images as PNG data URIs (the full prompt's first)."""
    return {**result.to_json(), "images": [data_uri(frame) for frame in result.images]}


def word_summary(result: WordImportance, s) -> str:
    rows = "\n".join(f"| {result.words[k]} | {result.text_cosine[k]:.3f} | {result.clip_score[k]:.1f} |"
                     for k in result.order())
    return (f"Done, seed {s.seed}: the words ranked by how far dropping each moves the prompt's CLIP embedding. The "
            f"full prompt's image scores {result.full_clip_score:.1f} against it.\n\n"
            f"| word dropped | cosine to the full prompt | CLIP score of its image |\n| --- | --- | --- |\n{rows}")


# -- layout and wiring ---------------------------------------------------------------------------------------------
@dataclass
class DebugTab:
    a: gr.Textbox
    b: gr.Textbox
    fractions: gr.Textbox
    edit_sampling: SamplingControls
    edit_go: gr.Button
    edit_stop: gr.Button
    edit_status: gr.Markdown
    edit_strip: gr.Image
    edit_gallery: gr.Gallery
    prompt: gr.Textbox
    words_sampling: SamplingControls
    words_go: gr.Button
    words_stop: gr.Button
    words_status: gr.Markdown
    words: gr.HighlightedText
    words_strip: gr.Image
    words_json: gr.JSON


def build(ctx: Context) -> DebugTab:
    with gr.Tab("Debug a prompt", id="debug"):
        gr.Markdown("### When does the picture commit? Switch prompts part way\nPrompt A for the first f of the "
                    "steps, then prompt B, one picture per f from one seed: f = 0 is B alone, f = 1 is A alone. "
                    "Prompt A may also be written `[from:to:when]`, as in the Generate box.")
        with gr.Row():
            a = gr.Textbox(REFERENCE_PROMPTS[0], label="prompt A (first)", elem_id="pe-a")
            b = gr.Textbox(REFERENCE_PROMPTS[1], label="prompt B (after the switch)", elem_id="pe-b")
        with gr.Row():
            fractions = gr.Textbox(FRACTIONS_TEXT, label="switch fractions f (0 to 1)", elem_id="pe-fractions")
            edit_sampling = SamplingControls.build(samplers=ctx.models.samplers)
        with gr.Row():
            edit_go = gr.Button("Switch strip", variant="primary", elem_id="pe-go")
            edit_stop = gr.Button("Stop", variant="stop", elem_id="pe-stop")
        edit_strip = gr.Image(label="A until f, then B (same seed)", type="pil", format="png", elem_id="pe-strip",
                              alt_text="Switch strip: one image per f, from one seed, prompt A for the first f of the "
                              "steps and prompt B after; each column is labelled with its f")
        edit_status = gr.Markdown(elem_id="pe-status")
        edit_gallery = gr.Gallery(label="as PNGs (they carry the switch; playback has the run)", columns=9,
                                  height="auto", format="png", elem_classes=["pixelated"])
        gr.Markdown("### Which words matter?\nEach word is dropped in turn and the prompt re-encoded: the shading is "
                    "how far that moves CLIP's embedding of the prompt; the strip is the same seed without the word.")
        prompt = gr.Textbox(WORDS_PROMPT, label="prompt", elem_id="wi-prompt")
        with gr.Row():
            words_sampling = SamplingControls.build(samplers=ctx.models.samplers)
        with gr.Row():
            words_go = gr.Button("Which words matter?", variant="primary", elem_id="wi-go")
            words_stop = gr.Button("Stop", variant="stop", elem_id="wi-stop")
        words = gr.HighlightedText(label="the prompt, each word shaded by its effect on the embedding",
                                   show_legend=False, elem_id="wi-words")
        # the strip names its columns itself: no label badge or toolbar over the first and last of them
        words_strip = gr.Image(label="all words, then without each word (same seed)", show_label=False, buttons=[],
                               type="pil", format="png", interactive=False, elem_id="wi-strip",
                               alt_text="Word importance strip, from one seed: the whole prompt, then the prompt "
                               "without each word in turn; each column is labelled with the word it drops")
        words_status = gr.Markdown(elem_id="wi-status")
        with gr.Accordion("as JSON (for API clients)", open=False):
            words_json = gr.JSON(label="words, text_cosine, clip_score, images")
    return DebugTab(a, b, fractions, edit_sampling, edit_go, edit_stop, edit_status, edit_strip, edit_gallery,
                    prompt, words_sampling, words_go, words_stop, words_status, words, words_strip, words_json)


def edit_call(ctx: Context, tab: DebugTab, shared: Shared) -> Call:
    s = tab.edit_sampling
    return Call(bind(prompt_edit, ctx), [tab.a, tab.b, tab.fractions, s.seed, s.w, s.steps, s.sampler],
                [tab.edit_strip, tab.edit_gallery, tab.edit_status, s.seed, shared.last_run], ctx.model_group,
                status=tab.edit_status)


def words_call(ctx: Context, tab: DebugTab) -> Call:
    s = tab.words_sampling
    return Call(bind(word_importance, ctx), [tab.prompt, s.seed, s.w, s.steps, s.sampler],
                [tab.words, tab.words_strip, tab.words_json, tab.words_status, s.seed], ctx.model_group,
                status=tab.words_status)


def wire(ctx: Context, tab: DebugTab, shared: Shared) -> None:
    editing = edit_call(ctx, tab, shared).on(tab.edit_go.click, api_name="prompt_edit")
    after_finished(editing, tab.edit_status, shared)   # the playback tab shows the strip's run
    weighing = words_call(ctx, tab).on(tab.words_go.click, api_name="word_importance")
    for event, stop in ((editing, tab.edit_stop), (weighing, tab.words_stop)):
        on_stop(ctx, stop, [event])


# -- the tour ------------------------------------------------------------------------------------------------------
def tour_fill(tab: DebugTab, then: tour.PromptEdit | tour.Words) -> dict:
    if isinstance(then, tour.Words):
        return {tab.prompt: then.prompt, **tab.words_sampling.fill(then.sampling)}
    return {tab.a: then.a, tab.b: then.b, tab.fractions: ", ".join(f"{f:g}" for f in then.fractions),
            **tab.edit_sampling.fill(then.sampling)}


def tour_steps(ctx: Context, tab: DebugTab, shared: Shared, then: tour.PromptEdit | tour.Words) -> list[Call]:
    if isinstance(then, tour.Words):
        return [words_call(ctx, tab)]
    return [edit_call(ctx, tab, shared), *shared.after_run]
