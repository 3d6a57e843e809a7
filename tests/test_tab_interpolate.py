"""The Interpolate and vary tab's handlers (slerp, mix, variations), called as functions: no server."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

gr = pytest.importorskip("gradio")

from clipdiff.app.tabs import generate  # noqa: E402
from clipdiff.app.tabs import interpolate as tab  # noqa: E402
from clipdiff.images import read_params, save_png  # noqa: E402
from clipdiff.testing import awkward_uploads, solid_image  # noqa: E402

ROSE, DAISY = "A deep red rose flower", "A round white daisy with a yellow center"
CELL = 96 + 4   # a labelled strip's column: the 96 px cell and its gap


def last(updates):
    return list(updates)[-1]


def test_interpolate_streams_a_strip_from_one_prompt_to_the_other(ctx):
    updates = list(tab.interpolate(ctx, ROSE, DAISY, 4, 1.0, 5, 3, "ddim"))
    assert [u[1] for u in updates] == [f"'{ROSE}' -> '{DAISY}': step {k} of 3" for k in (1, 2)] + \
        [f"'{ROSE}' -> '{DAISY}': Done, seed 5."]
    strip, _, seed = updates[-1]
    assert seed == 5 and strip.width == 4 * CELL + 4, "one column per point"
    assert strip.tobytes() != updates[0][0].tobytes()


def test_mix_is_each_prompt_alone_and_the_mix_between(ctx):
    updates = list(tab.mix_prompts(ctx, ROSE, DAISY, 0.3, 2.0, 9, 2, "dpmsolver"))
    strip, status, seed = updates[-1]
    assert status == f"0.7 x '{ROSE}' + 0.3 x '{DAISY}': Done, seed 9." and seed == 9
    assert strip.width == 3 * CELL + 4
    alone = list(tab.mix_prompts(ctx, ROSE, DAISY, 0.0, 2.0, 9, 2, "dpmsolver"))[-1][0]
    first = (4, 44, 4 + 96, 44 + 96)
    assert alone.crop(first).tobytes() == strip.crop(first).tobytes(), "the first prompt alone does not change"
    assert "mix weight 7 is outside 0 to 1" in list(tab.mix_prompts(ctx, ROSE, DAISY, 7, 2.0, 9, 1, "ddim"))[-1][1]


def test_two_prompts_are_needed(ctx):
    with pytest.raises(gr.Error, match="Type at least one first prompt"):
        list(tab.interpolate(ctx, "", DAISY, 3, 1.0, 5, 1, "ddim"))
    with pytest.raises(gr.Error, match="Type at least one second prompt"):
        list(tab.mix_prompts(ctx, ROSE, " ", 0.5, 1.0, 5, 1, "ddim"))


def test_variations_follow_an_uploaded_images_embedding(ctx, tmp_path):
    upload = str(awkward_uploads(tmp_path)["rgba"])
    updates = list(tab.vary(ctx, upload, 3, 1.0, 5, 2, "ddim"))
    seen_first = updates[0][1]
    assert isinstance(seen_first, Image.Image) and seen_first.size == (128, 128), "what CLIP sees, 4x"
    assert updates[0][2] == "step 1 of 2"
    gallery, seen, status, seed = updates[-1]
    assert status == "Done: 3 variation(s)." and seed == 5 and seen.tobytes() == seen_first.tobytes()
    params = [read_params(path) for path, _ in gallery]
    assert [p["seed"] for p in params] == [5, 6, 7] and {p["conditioned_on"] for p in params} == {"embedding"}
    assert gallery[0][1].startswith("variation of an uploaded image | w 1 | seed 5 |")
    with pytest.raises(gr.Error, match="image: expected an uploaded image file"):
        list(tab.vary(ctx, None, 3, 1.0, 5, 2, "ddim"))


def test_the_tours_variations_start_from_the_generate_steps_first_image(ctx, tmp_path):
    *_, run = list(generate.generate(ctx, ROSE, 2.0, 1, "ddim", 3, 2))[-1]
    path = tab.first_generated_image(ctx, run)
    assert read_params(path) == run.params[0]
    assert tab.variation_of(path) == f"variation of a generated image ({ROSE!r}, seed 3)", "where it came from"
    gallery, *_ = list(tab.vary(ctx, path, 1, 1.0, 5, 1, "ddim"))[-1]
    assert gallery[0][1].startswith(f"variation of a generated image ({ROSE!r}, seed 3) | w 1 | seed 5 |")
    long = save_png(Image.new("RGB", (32, 32)), tmp_path / "long.png", {"prompt": "a " + "very " * 12 + "long rose"})
    assert tab.variation_of(str(long)) == "variation of a generated image ('a very very very very very ve...')"
    with pytest.raises(gr.Error, match="Generate an image first"):
        tab.first_generated_image(ctx, None)


def test_interpolation_mix_and_variations_take_a_negative_prompt(ctx, tmp_path):
    strips = [np.asarray(last(tab.interpolate(ctx, ROSE, DAISY, 3, 2.0, 1, 2, "ddim", negative))[0])
              for negative in ("", "red")]
    assert (strips[0] != strips[1]).any()
    mixes = [np.asarray(last(tab.mix_prompts(ctx, ROSE, DAISY, 0.5, 2.0, 1, 2, "ddim", negative))[0])
             for negative in ("", "red")]
    assert (mixes[0] != mixes[1]).any()
    upload = str(solid_image(tmp_path, "red.png", "red"))
    varied, _, _, _ = last(tab.vary(ctx, upload, 1, 2.0, 1, 2, "ddim", "red"))
    assert read_params(varied[0][0])["negative_prompt"] == "red"
