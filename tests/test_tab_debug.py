"""Debugging a prompt in the app (issue 15), handlers called as functions: the negative prompt through Generate, the
sweep, interpolation and variations (and back from a PNG), prompt editing in the Generate box, the Debug tab's
switch strip and word importance, and what the playback shows of them. No server."""
from __future__ import annotations

import numpy as np
import pytest

gr = pytest.importorskip("gradio")

from clipdiff.app.limits import MAX_ABLATED_WORDS, MAX_PROMPT_EDIT_FRACTIONS  # noqa: E402
from clipdiff.app.session import LastRun  # noqa: E402
from clipdiff.app.tabs import debug, generate, interpolate, playback, sweep  # noqa: E402
from clipdiff.images import read_params  # noqa: E402
from clipdiff.playback import NEGATIVE_PANEL  # noqa: E402
from clipdiff.testing import solid_image  # noqa: E402

ROSE, DAISY, SUNFLOWER = "A deep red rose flower", "A round white daisy", "An orange sunflower"


def last(updates):
    return list(updates)[-1]


def pixels(path) -> np.ndarray:
    from PIL import Image
    return np.asarray(Image.open(path).convert("RGB")).astype(int)


# -- the negative prompt -----------------------------------------------------------------------------------------
def test_generate_with_a_negative_prompt_carries_it_in_the_png_and_loads_it_back(ctx):
    plain, *_ = last(generate.generate(ctx, ROSE, 2.0, 3, "ddim", 7, 1))
    gallery, status, _, run = last(generate.generate(ctx, ROSE, 2.0, 3, "ddim", 7, 1, "  red\npetals "))
    params = read_params(gallery[0][0])
    assert params["negative_prompt"] == "red petals" and "negative: red petals" in gallery[0][1]
    assert "negative_prompt" not in read_params(plain[0][0])
    assert np.abs(pixels(plain[0][0]) - pixels(gallery[0][0])).max() > 2, "the negative changed the picture"
    assert generate.load_negative(gallery[0][0]) == "red petals" and generate.load_negative(plain[0][0]) == ""
    assert generate.load_negative(None) == gr.skip()
    assert generate.load_params(gallery[0][0]) == (ROSE, 2.0, 3, "ddim", 7, 1), "/load_params answers as before"
    assert generate.reuse_negative(run, 0) == "red petals" and generate.reuse_negative(None, 0) == gr.skip()
    assert run.playback.negative == [True] and run.playback.panels(0)[3] == NEGATIVE_PANEL


def test_the_playback_names_the_negative_panel_and_draws_the_cosine_to_it(ctx):
    *_, run = last(generate.generate(ctx, f"{ROSE}\n{DAISY}", 2.0, 3, "ddim", 7, 1, "red"))
    _, _, frame, caption, figure, _, _ = playback.show_playback(ctx, run)
    assert "x_t | x0 (guided) | x0 (conditional) | negative x0 | |eps_c - eps_neg| | guidance |w (eps_c - eps_neg)|" \
        in caption, "the panels' names follow the run"
    assert ", to the negative prompt " in caption.splitlines()[0], "the caption gives both cosines"
    names = [trace.name for trace in figure.data]
    assert "cosine to the negative prompt" in names and "mean |eps_c - eps_neg|" in names
    cosines = run.playback.extra_cosines["negative prompt"]
    assert cosines.shape == (3, 2) and np.isfinite(cosines).all()
    plain = last(generate.generate(ctx, ROSE, 2.0, 3, "ddim", 7, 1))[-1]
    _, _, _, caption, figure, _, _ = playback.show_playback(ctx, plain)
    assert "| x0 (unconditional) | |eps_c - eps_u| |" in caption and "negative" not in caption
    assert not any("negative" in (trace.name or "") for trace in figure.data), "nothing new without a negative"
    assert plain.playback.panels(0)[3] == "x0 (unconditional)"


def test_the_sweep_interpolation_mix_and_variations_take_a_negative_prompt(ctx, tmp_path):
    grid, cells, status, _ = last(sweep.run_sweep(ctx, ROSE, "0, 2", 3, 3, "ddim", "red"))
    assert [read_params(path)["negative_prompt"] for path, _ in cells] == ["red", "red"]
    plain_grid = last(sweep.run_sweep(ctx, ROSE, "0, 2", 3, 3, "ddim"))[0]
    assert np.asarray(grid).shape == np.asarray(plain_grid).shape and (np.asarray(grid) != np.asarray(plain_grid)).any()
    strips = [np.asarray(last(interpolate.interpolate(ctx, ROSE, DAISY, 3, 2.0, 1, 2, "ddim", negative))[0])
              for negative in ("", "red")]
    assert (strips[0] != strips[1]).any()
    mixes = [np.asarray(last(interpolate.mix_prompts(ctx, ROSE, DAISY, 0.5, 2.0, 1, 2, "ddim", negative))[0])
             for negative in ("", "red")]
    assert (mixes[0] != mixes[1]).any()
    upload = str(solid_image(tmp_path, "red.png", "red"))
    varied, _, _, _ = last(interpolate.vary(ctx, upload, 1, 2.0, 1, 2, "ddim", "red"))
    assert read_params(varied[0][0])["negative_prompt"] == "red"


def test_an_over_long_negative_prompt_is_refused_in_words(ctx):
    with pytest.raises(gr.Error, match="negative prompt is 10,001 characters long"):
        last(generate.generate(ctx, ROSE, 2.0, 2, "ddim", 1, 1, "x" * 10_001))
    with pytest.raises(gr.Error, match="negative prompt must be text"):
        last(sweep.run_sweep(ctx, ROSE, "0", 1, 2, "ddim", 12))


# -- prompt editing in the Generate box -------------------------------------------------------------------------
def test_the_generate_box_reads_from_to_when_and_the_png_loads_it_back(ctx):
    gallery, status, _, run = last(generate.generate(ctx, f"[{DAISY}:{SUNFLOWER}:0.5]\n{DAISY}", 2.0, 4, "ddim", 3, 1))
    params = read_params(gallery[0][0])
    assert (params["prompt"], params["switch_to"], params["switch_at"]) == (DAISY, SUNFLOWER, 0.5)
    assert gallery[0][1].startswith(f"[{DAISY}:{SUNFLOWER}:0.5] | w 2")
    assert generate.load_params(gallery[0][0])[0] == f"[{DAISY}:{SUNFLOWER}:0.5]"
    assert run.playback.switch_timesteps[0] == run.playback.records[2].timestep, "switched after 2 of 4 steps"
    assert run.playback.switch_timesteps[1] is None
    _, _, _, caption, figure, _, _ = playback.show_playback(ctx, run)
    assert any(shape.line.dash == "dot" for shape in figure.layout.shapes), "the switch marked"
    assert "cosine to the first prompt" in [trace.name for trace in figure.data]
    assert "cosine to the second prompt (the one it switched to) " in caption and ", to the first prompt " in caption
    second = playback.scrub(run, 1, 1)[1]
    assert "cosine to the prompt " in second and "first prompt" not in second, "the daisy alone never switched"
    stepped = last(generate.generate(ctx, f"[{DAISY}:{SUNFLOWER}:9]", 2.0, 4, "ddim", 3, 1))[1]
    assert "switches at step 9, but the run has 4: it never switches" in stepped


@pytest.mark.parametrize("prompt, words", [("a [red rose", "a \\[ without its \\]"), ("a [red] rose", "not prompt "),
                                           ("[a:b:0.2] [c:d:0.3]", "one switch per prompt"),
                                           ("[a:b:[c:d:1]:1]", "brackets inside brackets"),
                                           ("[a:b:2.5]", "between 0 and 1")])
def test_brackets_that_do_not_parse_get_a_clear_message(ctx, prompt, words):
    with pytest.raises(gr.Error, match=words):
        last(generate.generate(ctx, prompt, 2.0, 2, "ddim", 1, 1))


# -- the switch strip --------------------------------------------------------------------------------------------
def test_the_switch_strip_is_one_seed_from_b_alone_to_a_alone_and_is_recorded_for_playback(ctx):
    updates = list(debug.prompt_edit(ctx, DAISY, SUNFLOWER, "1, 0, 0.5, 0.5", 3, 2.0, 4, "ddim"))
    assert [u[2] for u in updates[:-1]] == [f"Sampling: step {k} of 4" for k in (1, 2, 3)]
    strip, gallery, status, seed, run = updates[-1]
    assert seed == 3 and strip.size[0] > 3 * 96 and isinstance(run, LastRun)
    assert [read_params(path)["switch_at"] for path, _ in gallery] == [0.0, 0.5, 1.0], "ascending, no repeats"
    assert "| 0.5 | 2 of 4 |" in status and status.startswith("Done, seed 3")
    alone = [last(generate.generate(ctx, prompt, 2.0, 4, "ddim", 3, 1))[0][0][0] for prompt in (SUNFLOWER, DAISY)]
    assert np.abs(pixels(gallery[0][0]) - pixels(alone[0])).max() <= 1, "f = 0: prompt B alone"
    assert np.abs(pixels(gallery[2][0]) - pixels(alone[1])).max() <= 1, "f = 1: prompt A alone"
    assert len(run.playback.records) == 4 and run.playback.switch_timesteps == [
        run.playback.records[0].timestep, run.playback.records[2].timestep, None]


def test_the_switch_strip_reads_from_to_when_in_prompt_a_and_refuses_what_it_cannot_use(ctx):
    *_, run = last(debug.prompt_edit(ctx, f"[{DAISY}:{SUNFLOWER}:1]", "", "0, 1", 3, 2.0, 4, "ddim"))
    assert [p["switch_at"] for p in run.params] == [0.0, 0.25, 1.0], "the step form joins the fractions"
    for args, words in (((DAISY, SUNFLOWER, "a, b"), "switch fraction must be a number"),
                        ((DAISY, SUNFLOWER, " , "), "at least one switch fraction"),
                        ((DAISY, "", "0.5"), "Type prompt B"),
                        (("", SUNFLOWER, "0.5"), "Type at least one prompt A"),
                        ((f"[{DAISY}:{SUNFLOWER}:0.5]", ROSE, "0.5"), "not both"),
                        ((DAISY, f"[{ROSE}:{DAISY}:0.5]", "0.5"), "only prompt A"),
                        ((f"[{DAISY}:{SUNFLOWER}:", "", "0.5"), "without its")):
        with pytest.raises(gr.Error, match=words):
            last(debug.prompt_edit(ctx, *args, 1, 2.0, 2, "ddim"))
    many = ", ".join(str(k / 20) for k in range(15))
    _, gallery, status, _, _ = last(debug.prompt_edit(ctx, DAISY, SUNFLOWER, many + ", 7", 1, 2.0, 1, "ddim"))
    assert len(gallery) == MAX_PROMPT_EDIT_FRACTIONS and "switch fraction 7 is outside 0 to 1" in status
    assert f"16 switch fractions: using the first {MAX_PROMPT_EDIT_FRACTIONS}" in status


# -- which words matter ------------------------------------------------------------------------------------------
def test_word_importance_shades_each_word_and_returns_json_for_api_clients(ctx):
    updates = list(debug.word_importance(ctx, "a red rose", 4, 2.0, 3, "ddim"))
    assert [u[3] for u in updates[:-1]] == [f"Sampling 4 images: step {k} of 3" for k in (1, 2)]
    words, strip, figures, status, seed = updates[-1]
    assert [w for w, _ in words] == ["a ", "red ", "rose "] and max(s for _, s in words) == 1.0
    assert all(0 <= s <= 1 for _, s in words)
    assert figures["words"] == ["a", "red", "rose"] and len(figures["text_cosine"]) == 3
    assert len(figures["clip_score"]) == 3 and len(figures["images"]) == 4
    assert figures["images"][0].startswith("data:image/png;base64,")
    assert strip.size[0] >= 4 * 80 and seed == 4 and "| word dropped |" in status


def test_a_strips_column_labels_stay_over_their_own_column():
    from clipdiff.images import labelled_grid

    frames = np.zeros((3, 8, 8, 3), dtype=np.uint8)
    long = ["without chrysanthemum-like", "without " + "very " * 12 + "petals", "x"]
    strip = np.asarray(labelled_grid(frames, rows=1, cols=3, col_labels=long, cell=80))
    label = strip[:44]
    for k in (0, 1):     # nothing of a label past its own cell: the gap to the next column stays white
        right = 4 + k * 84 + 80
        assert (label[:, right:right + 3] == 255).all(), f"label {k} runs into the next column"
    assert (label[:, 4:4 + 80] < 128).any(axis=(0, 2)).sum() > 20, "the label is still drawn"


def test_word_importance_caps_the_words_and_refuses_what_it_cannot_read(ctx):
    prompt = " ".join(f"w{k}" for k in range(MAX_ABLATED_WORDS + 5))
    words, _, figures, status, _ = last(debug.word_importance(ctx, prompt, 1, 2.0, 1, "ddim"))
    assert len(figures["words"]) == MAX_ABLATED_WORDS and len(words) == MAX_ABLATED_WORDS + 5
    assert words[-1][1] is None and f"dropping only the first {MAX_ABLATED_WORDS}" in status
    for prompt, message in (("", "Type at least one prompt"), ("[a:b:0.5]", "reads one prompt"),
                            ("a [rose", "without its"), ("x" * 10_001, "the limit is 10,000")):
        with pytest.raises(gr.Error, match=message):
            last(debug.word_importance(ctx, prompt, 1, 2.0, 1, "ddim"))
