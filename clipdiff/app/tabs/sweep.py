"""The Guidance sweep tab: prompts x w from one seed, so only the prompt and w change between cells."""
from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from ... import tour
from ...images import labelled_grid
from ...pipeline import REFERENCE_PROMPTS, REFERENCE_WS, sweep
from ..context import Context
from ..controls import SamplingControls, negative_box
from ..errors import answers_clearly, one_per_session
from ..inputs import Checked
from ..limits import MAX_SWEEP_PROMPTS
from ..page import scroll_to
from ..runs import sample, save_results
from ..wiring import PRIVATE, Call, Shared, bind, on_stop

TAKES = (tour.Sweep,)


@answers_clearly
@one_per_session
def run_sweep(ctx: Context, prompts_text, ws_text, seed, steps, sampler, negative_prompt=""):
    """prompts x w from one seed: rows are w, columns prompts. Streams the grid of x0 previews. A negative prompt
    replaces the learned null in every cell; a prompt may switch part way ([from:to:when])."""
    pipe = ctx.models.need_pipeline()
    checked = Checked()
    prompts = checked.lines(prompts_text, MAX_SWEEP_PROMPTS)
    ws = checked.ws(ws_text)
    s = checked.sampling(None, seed, steps, sampler)      # no w of its own: the rows are the ws
    jobs = sweep(prompts, ws, s.seed, checked.negative(negative_prompt))
    s = checked.budget(s, len(jobs))
    run = checked.prepare(pipe, jobs, s)
    row_labels = [f"w = {w:g}" for w in ws]
    for frames in sample(ctx, pipe, run):
        grid = labelled_grid(frames.images, rows=len(ws), cols=len(prompts), row_labels=row_labels,
                             col_labels=prompts)
        if frames.stopped:
            yield grid, gr.skip(), checked.status("", frames), s.seed
        elif not frames.done:
            yield grid, gr.skip(), checked.status(f"Sampling {len(jobs)} images: step {frames.step} of "
                                                  f"{frames.total}", frames), s.seed
        else:
            gallery, _, _ = save_results(ctx, pipe, frames.images, run)
            yield grid, gallery, checked.status(f"Done: {len(prompts)} prompt(s) x {len(ws)} w value(s), "
                                                f"seed {s.seed}.", frames), s.seed


@dataclass
class SweepTab:
    prompts: gr.Textbox
    ws: gr.Textbox
    sampling: SamplingControls
    go: gr.Button
    stop: gr.Button
    status: gr.Markdown
    grid: gr.Image
    gallery: gr.Gallery
    negative: gr.Textbox


def build(ctx: Context) -> SweepTab:
    with gr.Tab("Guidance sweep", id="sweep"):
        with gr.Row(equal_height=False):
            with gr.Column(scale=4, min_width=380):      # what you ask; the grid beside it
                prompts = gr.Textbox(label="Prompts (columns)", info="Ctrl+Enter runs the sweep", lines=3,
                                     value="\n".join(REFERENCE_PROMPTS), elem_id="sweep-prompts")
                with gr.Row():
                    go = gr.Button("Run sweep", variant="primary", elem_id="sweep")
                    stop = gr.Button("Stop", variant="stop", elem_id="sweep-stop")
                ws = gr.Textbox(label="w values (rows)", value=", ".join(f"{x:g}" for x in REFERENCE_WS),
                                elem_id="sweep-ws")
                sampling = SamplingControls.build(with_w=False, seed_label="seed (one for every cell)",
                                                  samplers=ctx.models.samplers)
                negative = negative_box(elem_id="sweep-negative")
            with gr.Column(scale=6, min_width=400):
                status = gr.Markdown(elem_id="sweep-status")
                grid = gr.Image(label="w (rows) x prompt (columns), same seed", type="pil", format="png",
                                elem_id="sweep-grid", alt_text="Guidance sweep grid from one seed: one row per w, "
                                "one column per prompt, each labelled; the cells below name each prompt, w and seed")
        gallery = gr.Gallery(label="Cells as PNGs", columns=7, height="auto", format="png",
                             elem_classes=["pixelated"])
    return SweepTab(prompts, ws, sampling, go, stop, status, grid, gallery, negative)


def run_call(ctx: Context, tab: SweepTab) -> Call:
    s = tab.sampling
    return Call(bind(run_sweep, ctx), [tab.prompts, tab.ws, s.seed, s.steps, s.sampler, tab.negative],
                [tab.grid, tab.gallery, tab.status, s.seed], ctx.model_group, status=tab.status)


def wire(ctx: Context, tab: SweepTab, shared: Shared) -> None:
    event = run_call(ctx, tab).on(tab.go.click, api_name="sweep")
    tab.go.click(None, js=scroll_to("#sweep-grid"), **PRIVATE)
    on_stop(ctx, tab.stop, [event])


def tour_fill(tab: SweepTab, then: tour.Sweep) -> dict:
    return {tab.prompts: "\n".join(then.prompts), tab.ws: ", ".join(f"{x:g}" for x in then.ws),
            tab.negative: then.negative, **tab.sampling.fill(then.sampling)}


def tour_steps(ctx: Context, tab: SweepTab, shared: Shared, then: tour.Sweep) -> list[Call]:
    return [run_call(ctx, tab)]
