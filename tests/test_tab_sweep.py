"""The Guidance sweep tab's handler, called as a function: no server."""
from __future__ import annotations

import numpy as np
import pytest

gr = pytest.importorskip("gradio")

from clipdiff.app.tabs import sweep as tab  # noqa: E402
from clipdiff.images import read_params  # noqa: E402

ROSE = "A deep red rose flower"
PROMPTS = ["A deep red rose flower", "A round white daisy with a yellow center"]


def last(updates):
    return list(updates)[-1]


def test_a_sweep_is_prompts_by_w_from_one_seed(ctx):
    updates = list(tab.run_sweep(ctx, "\n".join(PROMPTS), "-1, 0, 2", 3, 3, "ddim"))
    assert [u[2] for u in updates[:-1]] == [f"Sampling 6 images: step {k} of 3" for k in (1, 2)]
    assert all(u[1] == gr.skip() for u in updates[:-1]), "the cells' PNGs come once, at the end"
    grid, gallery, status, seed = updates[-1]
    assert status == "Done: 2 prompt(s) x 3 w value(s), seed 3." and seed == 3
    params = [read_params(path) for path, _ in gallery]
    assert [(p["w"], p["prompt"]) for p in params] == [(w, p) for w in (-1.0, 0.0, 2.0) for p in PROMPTS], \
        "rows are w, columns prompts"
    assert {p["seed"] for p in params} == {3} and {p["steps"] for p in params} == {3}
    assert grid.height > 3 * 96 and grid.width > 2 * 96, "a labelled cell per image"
    assert updates[0][0].size == grid.size, "the previews are the same grid"


def test_a_sweep_clamps_and_refuses_like_the_other_tabs(ctx):
    *_, status, _ = list(tab.run_sweep(ctx, "a\nb\nc\nd\ne", "1e9 0", 1, 1, "ddim"))[-1]
    assert "5 prompts: using the first 4" in status and "w value 1e+09 is outside -10 to 10" in status
    with pytest.raises(gr.Error, match="at least one w value"):
        list(tab.run_sweep(ctx, PROMPTS[0], ",", 1, 1, "ddim"))
    with pytest.raises(gr.Error, match="steps must be a number"):
        list(tab.run_sweep(ctx, PROMPTS[0], "0", 1, "many", "ddim"))


def test_the_sweep_has_no_w_control(ctx):
    """The rows are the w values, so the tour's w has nowhere to go (test_tabs.py checks what it does put in)."""
    with gr.Blocks():
        page = tab.build(ctx)
    assert page.sampling.w is None, "the rows are the w values: no w control"


def test_a_sweep_takes_a_negative_prompt(ctx):
    grid, cells, status, _ = last(tab.run_sweep(ctx, ROSE, "0, 2", 3, 3, "ddim", "red"))
    assert [read_params(path)["negative_prompt"] for path, _ in cells] == ["red", "red"]
    plain_grid = last(tab.run_sweep(ctx, ROSE, "0, 2", 3, 3, "ddim"))[0]
    assert np.asarray(grid).shape == np.asarray(plain_grid).shape and (np.asarray(grid) != np.asarray(plain_grid)).any()
