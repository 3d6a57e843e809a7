"""The Debug tab's handlers, called as functions: the switch strip (prompt editing at fractions of the run) and
word importance. No server. The negative prompt and the Generate box's [from:to:when] are tested with the tabs
that take them (test_tab_generate.py, test_tab_sweep.py, test_tab_interpolate.py, test_tab_playback.py)."""
from __future__ import annotations

import numpy as np
import pytest

gr = pytest.importorskip("gradio")

from clipdiff.app.limits import MAX_ABLATED_WORDS, MAX_PROMPT_EDIT_FRACTIONS  # noqa: E402
from clipdiff.app.session import LastRun  # noqa: E402
from clipdiff.app.tabs import debug, generate  # noqa: E402
from clipdiff.images import read_params  # noqa: E402

ROSE, DAISY, SUNFLOWER = "A deep red rose flower", "A round white daisy", "An orange sunflower"


def last(updates):
    return list(updates)[-1]


def pixels(path) -> np.ndarray:
    from PIL import Image
    return np.asarray(Image.open(path).convert("RGB")).astype(int)


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
