"""The Embedding map tab: the atlas (dataset images and texts in CLIP space) in 2-D, with your prompts and images
placed on it live."""
from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from ... import tour
from ...atlas import Atlas
from ...pipeline import REFERENCE_PROMPTS
from ..context import Context
from ..errors import answers_clearly
from ..figures import map_figure, thumbnail
from ..inputs import Checked, shorten, uploads_and_generated
from ..limits import MAX_PROMPTS
from ..page import scroll_to
from ..wiring import PRIVATE, Call, Shared, bind

TAKES = (tour.Map,)


@answers_clearly
def embed_map(ctx: Context, method, prompts_text, files, include_generated, show_texts, run):
    """The atlas in 2-D with your prompts and images placed on it."""
    atlas = ctx.models.need_atlas()
    encoder = ctx.models.need_encoder()
    checked = Checked()
    method = checked.choice(method, list(Atlas.METHODS), "method")
    prompts = checked.lines(prompts_text, MAX_PROMPTS, required=False)
    names, images = uploads_and_generated(files, include_generated, run, checked)
    live, shown = [], []
    for labels, modality, emb in ((prompts, "text", encoder.encode_text(prompts) if prompts else None),
                                  (names, "image", encoder.encode_image(images) if images else None)):
        if emb is not None:
            xy = atlas.place(emb.numpy(), method, modality)
            live += [{"label": label, "modality": modality, "x": float(x), "y": float(y)}
                     for label, (x, y) in zip(labels, xy)]
    pictures = dict(zip(names, images))
    for p in live:     # on the map: a short text, the whole label and the picture on hover
        short = p["label"].split(":")[0].replace("generated", "gen") if p["modality"] == "image" else \
            shorten(p["label"], 24)
        shown.append({**p, "short": short, **({"thumbnail": thumbnail(pictures[p["label"]])}
                                               if p["modality"] == "image" else {})})
    figure = map_figure(atlas, method, checked.flag(show_texts, "show texts"), shown)
    return figure, {"method": method, "points": live, "notes": checked.notes}


@dataclass
class MapTab:
    method: gr.Radio
    texts: gr.Checkbox
    generated: gr.Checkbox
    prompts: gr.Textbox
    files: gr.File
    go: gr.Button
    status: gr.Markdown
    plot: gr.Plot
    json: gr.JSON


def build(ctx: Context) -> MapTab:
    methods = list(Atlas.METHODS)
    with gr.Tab("Embedding map", id="map"):
        if ctx.models.atlas is None:
            gr.Markdown(f"**The embedding map needs an atlas.** {ctx.models.missing('embedding atlas')}")
        with gr.Row():
            method = gr.Radio(methods, value=methods[0], label="view",
                              info="umap-centered subtracts each modality's mean, the constant part of the modality "
                                   "gap; pca is a linear view")
            texts = gr.Checkbox(True, label="show atlas texts")
            generated = gr.Checkbox(True, label="place my generated images")
        with gr.Row():
            prompts = gr.Textbox(label="Prompts to place (one per line)", info="Ctrl+Enter draws the map", lines=3,
                                 value="\n".join(REFERENCE_PROMPTS), elem_id="map-prompts")
            files = gr.File(label="Images to place", file_count="multiple", file_types=["image"], type="filepath")
        go = gr.Button("Draw map", variant="primary")
        status = gr.Markdown(elem_id="map-status")      # a refusal's reason (its progress too)
        plot = gr.Plot(elem_id="map-plot")
        points = gr.JSON(label="placed points", open=False)
    return MapTab(method, texts, generated, prompts, files, go, status, plot, points)


def run_call(ctx: Context, tab: MapTab, shared: Shared) -> Call:
    return Call(bind(embed_map, ctx), [tab.method, tab.prompts, tab.files, tab.generated, tab.texts, shared.last_run],
                [tab.plot, tab.json], ctx.model_group, status=tab.status)


def wire(ctx: Context, tab: MapTab, shared: Shared) -> None:
    run_call(ctx, tab, shared).on(tab.go.click, api_name="embed_map")
    tab.go.click(None, js=scroll_to("#map-plot"), **PRIVATE)


def tour_fill(tab: MapTab, then: tour.Map) -> dict:
    return {tab.method: then.method, tab.prompts: "\n".join(then.prompts), tab.files: None, tab.generated: False,
            tab.texts: then.show_texts}


def tour_steps(ctx: Context, tab: MapTab, shared: Shared, then: tour.Map) -> list[Call]:
    return [run_call(ctx, tab, shared)]
