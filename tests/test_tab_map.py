"""The Embedding map tab's handler, called as a function: no server."""
from __future__ import annotations

import math

import pytest

gr = pytest.importorskip("gradio")

from clipdiff.app.context import Context, Models  # noqa: E402
from clipdiff.app.tabs import embed_map as tab  # noqa: E402
from clipdiff.app.tabs import generate  # noqa: E402
from clipdiff.testing import solid_image  # noqa: E402


def test_prompts_uploads_and_the_last_run_are_placed_on_the_atlas(ctx, tmp_path):
    *_, run = list(generate.generate(ctx, "A white daisy", 2.0, 1, "ddim", 1, 2))[-1]
    red = str(solid_image(tmp_path, "red.png", (200, 20, 20)))
    figure, result = tab.embed_map(ctx, "umap-centered", "a red flower\nwhite petals", [red], True, True, run)
    points = result["points"]
    assert [(p["label"], p["modality"]) for p in points] == [
        ("a red flower", "text"), ("white petals", "text"), ("red.png", "image"),
        ("generated 1: A white daisy (seed 1)", "image"), ("generated 2: A white daisy (seed 2)", "image")]
    assert all(math.isfinite(p["x"]) and math.isfinite(p["y"]) for p in points)
    assert result["method"] == "umap-centered" and result["notes"] == []
    assert [t.name for t in figure.data] == ["hover targets", "dataset images", "texts (species, captions)",
                                             "your texts", "your images"]
    hover, mine = figure.data[0], figure.data[4]
    assert list(mine.text) == ["red.png", "gen 1", "gen 2"], "short texts on the map"
    assert list(hover.customdata) == list(hover.hovertext) == [p["label"] for p in points], \
        "every live point hovers with its whole label"
    assert set(figure.layout.meta["thumbnails"]) == set(hover.customdata[2:]), "and the images with their picture"
    assert "thumbnail" not in points[2], "the JSON stays plain"
    assert "pictures" in figure.layout.title.text, "the title promises pictures where there are some"
    long = "a deep red rose flower with many petals"
    figure, _ = tab.embed_map(ctx, "pca", long, None, False, False, None)
    assert list(figure.data[-1].text) == ["a deep red rose flowe..."] and list(figure.data[0].hovertext) == [long], \
        "a cut label says so; the hover keeps the whole of it"
    assert "picture" not in figure.layout.title.text, "and only there: texts and dataset points have none"
    _, quiet = tab.embed_map(ctx, "pca", "", None, False, False, run)
    assert quiet["points"] == []


def test_a_map_needs_an_atlas_and_a_known_view(ctx, tiny_models):
    with pytest.raises(gr.Error, match="method must be one of umap, umap-centered, pca"):
        tab.embed_map(ctx, "tsne", "a rose", None, False, True, None)
    no_atlas = Context.create(Models(tiny_models.encoder, tiny_models.pipeline, None))
    with pytest.raises(gr.Error, match="embedding atlas is not loaded"):
        tab.embed_map(no_atlas, "pca", "a rose", None, False, True, None)
    with gr.Blocks():
        tab.build(no_atlas)   # the tab still builds, and says what is missing


def test_labels_of_crowded_points_go_different_ways():
    from clipdiff.app.figures import label_positions

    sides = label_positions([(0, 0), (0.01, 0), (0, 0.01), (5, 5), (5, 5.01)], near=0.1)
    assert len(set(sides[:3])) == 3, "three points on top of each other: three sides"
    assert sides[3] == "top center" and sides[4] != sides[3], "a group far away starts over"
