"""The Similarity tab's handlers, called as functions: no server."""
from __future__ import annotations

import numpy as np
import pytest

gr = pytest.importorskip("gradio")

from clipdiff.app.context import Context, Models  # noqa: E402
from clipdiff.app.limits import NEAREST_CAPTIONS  # noqa: E402
from clipdiff.app.tabs import generate  # noqa: E402
from clipdiff.app.tabs import similarity as tab  # noqa: E402
from clipdiff.testing import solid_image  # noqa: E402

TEXTS = "a red flower\na white flower\na sunflower"


@pytest.fixture
def run(ctx):
    *_, last = list(generate.generate(ctx, "A deep red rose flower\nA white daisy", 2.0, 2, "ddim", 1, 2))[-1]
    return last


def test_texts_by_images_with_softmax_over_either_side(ctx, run, tmp_path):
    red = str(solid_image(tmp_path, "red.png", (200, 20, 20)))
    figure, result, rows = tab.similarity(ctx, TEXTS, [red], True, "texts", run)
    assert result["images"] == ["red.png", "generated 1: A deep red rose flower (seed 1)",
                                "generated 2: A deep red rose flower (seed 2)", "generated 3: A white daisy (seed 1)",
                                "generated 4: A white daisy (seed 2)"], "names that say which image is which: an upload by its file name"
    cosine, softmax = np.array(result["cosine"]), np.array(result["softmax"])
    assert cosine.shape == softmax.shape == (3, 5) and np.all(np.abs(cosine) <= 1 + 1e-5)
    assert np.allclose(softmax.sum(0), 1, atol=1e-5), "over texts: each image's column sums to 1"
    by_images = np.array(tab.similarity(ctx, TEXTS, [red], True, "images", run)[1]["softmax"])
    assert np.allclose(by_images.sum(1), 1, atol=1e-5), "over images: each text's row sums to 1"
    assert len(rows) == 5 * NEAREST_CAPTIONS and rows[0][:2] == ["red.png", 1]
    assert rows[0][2] in ctx.models.atlas.texts, "nearest captions come from the atlas"
    assert [t.type for t in figure.data] == ["heatmap", "heatmap"]
    thumbnails = figure.layout.meta["thumbnails"]
    assert list(thumbnails) == result["images"] and all(u.startswith("data:image/png;base64,") for u in
                                                       thumbnails.values()), "a thumbnail per column, for hover"
    axis_images = [(im.xref, im.x, im.source) for im in figure.layout.images]
    assert axis_images == [(axis, k, thumbnails[name]) for axis in ("x", "x2") for k, name in
                           enumerate(result["images"])], "under every column of both heatmaps"
    assert tab.similarity(ctx, TEXTS, [red, red], False, "texts", run)[1]["images"] == ["red.png", "red.png (2)"]


def test_without_an_atlas_the_nearest_captions_are_the_texts(ctx, run, tiny_models):
    no_atlas = Context.create(Models(tiny_models.encoder, tiny_models.pipeline, None))
    _, _, rows = tab.similarity(no_atlas, TEXTS, None, True, "texts", run)
    assert {row[2] for row in rows} == set(TEXTS.splitlines())


def test_nothing_to_compare_is_said_in_words(ctx, tmp_path):
    with pytest.raises(gr.Error, match="Upload an image, or generate one"):
        tab.similarity(ctx, TEXTS, None, True, "texts", None)
    with pytest.raises(gr.Error, match="softmax over must be one of texts, images"):
        tab.similarity(ctx, TEXTS, None, True, "pixels", None)
    with pytest.raises(gr.Error, match="Type at least one text"):
        tab.similarity(ctx, "", None, True, "texts", None)


def test_the_last_run_ranked_best_clip_score_first(run):
    ranked = tab.rank_last_run(run)
    scores = [float(caption.split("CLIP score ")[1].split(":")[0]) for _, caption in ranked]
    assert scores == sorted(scores, reverse=True) and len(ranked) == 4
    assert [caption.split(":")[0].split(" ")[0] for _, caption in ranked] == ["#1", "#2", "#3", "#4"]
    best = int(np.argmax(run.scores))
    assert ranked[0][1].endswith(run.labels[best]) and ranked[0][0].size == (64, 64), "4x the 16 px image"
    with pytest.raises(gr.Error, match="Generate some images first"):
        tab.rank_last_run(None)
