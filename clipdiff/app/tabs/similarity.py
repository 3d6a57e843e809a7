"""The Similarity tab: texts x images cosines and CLIP's softmax over candidates, each image's nearest captions, and
the last run ranked by CLIP score."""
from __future__ import annotations

from dataclasses import dataclass

import gradio as gr
import numpy as np

from ... import claims, tour
from ...images import to_pil
from ...pipeline import REFERENCE_PROMPTS
from ...similarity import cosine_matrix, nearest, softmax_over_candidates
from ..context import Context
from ..errors import answers_clearly
from ..figures import similarity_figure, thumbnail
from ..inputs import Checked, uploads_and_generated
from ..limits import MAX_SIMILARITY_TEXTS, NEAREST_CAPTIONS, PREVIEW_SCALE
from ..session import LastRun
from ..page import scroll_to
from ..wiring import PRIVATE, Call, Shared, bind

TAKES = (tour.Similarity,)
SOFTMAX_OVER = ("texts", "images")
COSINE_NOTE = """**Why is even a matching pair far from 1?** CLIP puts texts and images in two regions of its
sphere (the *modality gap*), so a perfect caption still scores well below 1: about 0.2-0.4 with OpenAI's
CLIP. With our small flowers CLIP a real photo scores {cosine_right_p10:.2f} to {cosine_right_p90:.2f} against
its own species' prompt (the middle 80% of photos; a wrong species' prompt {cosine_wrong_p10:.2f} to
{cosine_wrong_p90:.2f}), and generated flowers spread wider: {generated_right_min:.2f} to {generated_right_max:.2f}
for the right prompt, down to {generated_wrong_min:.2f} for a wrong one. What CLIP learned is the *ranking*: the
right caption beats the wrong ones. The softmax turns that ranking into probabilities, sharpened by the model's
learned temperature (logit scale), which is why small cosine differences become confident choices."""


def cosine_note() -> str:
    """The note with the shipped models' measured cosines (clipdiff/claims.py)."""
    return claims.render(COSINE_NOTE)


@answers_clearly
def similarity(ctx: Context, texts_text, files, include_generated, softmax_over, run):
    """Texts x images cosines, softmax over candidates, and each image's nearest captions."""
    encoder = ctx.models.need_encoder()
    atlas = ctx.models.atlas
    checked = Checked()
    texts = checked.lines(texts_text, MAX_SIMILARITY_TEXTS, name="texts")
    softmax_over = checked.choice(softmax_over, SOFTMAX_OVER, "softmax over")
    names, images = uploads_and_generated(files, include_generated, run, checked)
    if not images:
        raise gr.Error("Upload an image, or generate one and tick 'include my generated images'.")
    text_emb, image_emb = encoder.encode_text(texts), encoder.encode_image(images)
    cosines = cosine_matrix(text_emb, image_emb)                       # (texts, images)
    probs = softmax_over_candidates(cosines, encoder.logit_scale, dim=0 if softmax_over == "texts" else 1)
    bank_texts, bank = (atlas.texts, atlas.text_emb) if atlas is not None else (texts, text_emb)
    rows = [[name, rank + 1, bank_texts[nb.index], round(nb.cosine, 4)]
            for name, neighbours in zip(names, nearest(image_emb, bank, NEAREST_CAPTIONS))
            for rank, nb in enumerate(neighbours)]
    result = {"texts": texts, "images": names, "cosine": cosines.tolist(), "softmax": probs.tolist(),
              "softmax_over": softmax_over, "logit_scale": encoder.logit_scale, "notes": checked.notes}
    figure = similarity_figure(texts, names, cosines.numpy(), probs.numpy(), softmax_over,
                               [thumbnail(im) for im in images])
    return figure, result, rows


@answers_clearly
def rank_last_run(run):
    """The last run's images, best CLIP score against their own prompt first: pick the best of N."""
    if not isinstance(run, LastRun):
        raise gr.Error("Generate some images first (Generate tab).")
    order = np.argsort(run.scores)[::-1]
    return [(to_pil(run.frames[i], PREVIEW_SCALE), f"#{r + 1} CLIP score {run.scores[i]:.1f}: {run.labels[i]}")
            for r, i in enumerate(order)]


@answers_clearly
def rank_new_run(run):
    """After every new run: its ranking replaces the previous run's, so "best first" always shows the current run."""
    return rank_last_run(run) if isinstance(run, LastRun) else gr.skip()


@dataclass
class SimilarityTab:
    texts: gr.Textbox
    files: gr.File
    generated: gr.Checkbox
    over: gr.Radio
    go: gr.Button
    status: gr.Markdown
    plot: gr.Plot
    nearest: gr.Dataframe
    json: gr.JSON
    rank: gr.Button
    ranked: gr.Gallery


def build(ctx: Context) -> SimilarityTab:
    with gr.Tab("Similarity", id="similarity"):
        with gr.Row():
            texts = gr.Textbox(label="Texts (one per line)", info="Ctrl+Enter compares", lines=4,
                               value="\n".join(REFERENCE_PROMPTS), elem_id="similarity-texts")
            with gr.Column():
                files = gr.File(label="Images", file_count="multiple", file_types=["image"], type="filepath",
                                elem_id="similarity-files")
                generated = gr.Checkbox(True, label="include my generated images")
                over = gr.Radio(list(SOFTMAX_OVER), value="texts", label="softmax over (the candidates)")
        go = gr.Button("Compare", variant="primary")
        status = gr.Markdown(elem_id="similarity-status")      # a refusal's reason (its progress too)
        plot = gr.Plot(elem_id="similarity-plot")
        gr.Markdown(cosine_note())
        nearest_table = gr.Dataframe(headers=["image", "rank", "nearest caption", "cosine"],
                                     label="nearest captions of each image", interactive=False)
        matrices = gr.JSON(label="matrices", open=False)
        rank = gr.Button("Rank my last run by CLIP score")
        ranked = gr.Gallery(label="best first", columns=8, height="auto", elem_classes=["pixelated"],
                            elem_id="ranked")
    return SimilarityTab(texts, files, generated, over, go, status, plot, nearest_table, matrices, rank, ranked)


def run_call(ctx: Context, tab: SimilarityTab, shared: Shared) -> Call:
    return Call(bind(similarity, ctx), [tab.texts, tab.files, tab.generated, tab.over, shared.last_run],
                [tab.plot, tab.json, tab.nearest], ctx.model_group, status=tab.status)


def rank_call(tab: SimilarityTab, last_run: gr.State) -> Call:
    """What follows every new run here: the ranking shows that run."""
    return Call(rank_new_run, last_run, tab.ranked)


def wire(ctx: Context, tab: SimilarityTab, shared: Shared) -> None:
    run_call(ctx, tab, shared).on(tab.go.click, api_name="similarity")
    tab.go.click(None, js=scroll_to("#similarity-plot"), **PRIVATE)
    Call(rank_last_run, shared.last_run, tab.ranked, status=tab.status).on(tab.rank.click, api_name="rank")


def tour_fill(tab: SimilarityTab, then: tour.Similarity) -> dict:
    return {tab.texts: "\n".join(then.texts), tab.files: None, tab.generated: True, tab.over: then.softmax_over}


def tour_steps(ctx: Context, tab: SimilarityTab, shared: Shared, then: tour.Similarity) -> list[Call]:
    return [run_call(ctx, tab, shared)]
