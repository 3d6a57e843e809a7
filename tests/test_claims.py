"""Claims are measured, not written: checkpoints/claims.json was measured on the models checkpoints/ ships, every
text that states a figure about them renders from it (an unknown name fails), and every document line that quotes
one reads as its template renders. Reading the committed file is fast; one test runs the measuring code on the
tiny models."""
from __future__ import annotations

import re

import numpy as np
import pytest

from clipdiff import claims, tour


def test_the_claims_were_measured_on_the_shipped_models():
    assert claims.stale_models() == [], "re-measure: python -m clipdiff claims"


def test_the_figures_that_need_no_sampling_match_a_fresh_measurement():
    """What can be re-measured in seconds is: the CLIP's zero-shot top-1 (checkpoints/clip/eval.json), the atlas's
    cosines and size, the U-Net's context dropout and the word effects."""
    from clipdiff.atlas import Atlas
    from clipdiff.checkpoints import DEFAULT_CLIP_DIR, DEFAULT_UNET_DIR, read_json
    from clipdiff.diffusion import load_diffusion
    from clipdiff.encoders import ClipEncoder

    f = claims.figures()
    assert f["zero_shot_top1"] == pytest.approx(read_json(DEFAULT_CLIP_DIR / "eval.json")["zero_shot"]["top1"],
                                                abs=1e-4)
    atlas = Atlas.load()
    fresh = {**claims.atlas_cosines(atlas),
             **claims.static_figures(ClipEncoder.load("default", None, "cpu"), atlas,
                                     load_diffusion(DEFAULT_UNET_DIR, "cpu")[1])}
    for name, value in fresh.items():
        assert f[name] == pytest.approx(value, abs=2e-4), name


def test_every_document_line_agrees_with_its_measurement():
    assert claims.stale_texts() == [], "re-measure (python -m clipdiff claims), then fix these lines"


def test_a_document_that_disagrees_is_named(tmp_path):
    measured = claims.load()
    changed = {**measured, "figures": {**measured["figures"], "drop_red": measured["figures"]["drop_red"] + 0.5}}
    stale = claims.stale_texts(changed)
    assert len(stale) == 1 and stale[0].startswith("README.md: ") and "dropping" in stale[0]
    other = {**measured, "models": {**measured["models"], "unet": "unet-0000000000"}}
    assert any("unet-0000000000" in line for line in claims.stale_texts(other))


def test_every_tour_text_renders_from_the_measured_figures():
    """Each explanation's placeholders are measured names, and no figure is left unrendered."""
    figures = claims.figures()
    for experiment in tour.EXPERIMENTS:
        for name in claims.placeholders(experiment.template):
            assert name in figures, f"{experiment.id}: {name} is not measured"
        assert experiment.explanation == claims.render(experiment.template)
        assert "{" not in experiment.explanation, experiment.id


def test_an_unmeasured_name_fails_loudly():
    with pytest.raises(KeyError, match="no measured claim named 'made_up'"):
        claims.render("{made_up:.2f}", {"other": 1.0})


def test_the_tour_states_what_the_models_do():
    """The lessons the texts draw hold for the measured figures: if a retrained model stops showing one, the
    experiment must change, not only its numbers."""
    f = claims.figures()
    # the negative-prompt experiment: the daisy loses its yellow and stays a flower
    assert f["daisy_yellow_colour_negative"] < 0.6 * f["daisy_yellow_colour_null"]
    assert f["daisy_yellow_photo_likeness_negative"] > f["daisy_yellow_photo_likeness_null"] - 0.02
    # ... while "red" pushes the rose off the flowers: it loses its red and moves away from every photo
    assert f["rose_red_colour_negative"] < 0.3 * f["rose_red_colour_null"]
    assert f["rose_red_photo_likeness_negative"] < f["rose_red_photo_likeness_null"]
    # out of distribution: the score cannot tell a purple flower from a purple elephant; noise is far below
    assert f["reference_score_min"] <= f["ood_elephant_score"] <= f["reference_score_max"]
    assert f["ood_elephant_score"] > f["ood_elephant_noise_score"] + 10
    assert f["elephant_cosine_colour"] > f["elephant_cosine_thing"] + 0.2
    # playback: the prompt cosine peaks early, then dips
    assert f["playback_peak_step"] <= 4 and f["playback_dip"] < f["playback_peak"]
    assert f["playback_dip_step"] > f["playback_peak_step"] and f["playback_end"] > f["playback_dip"]
    # the README's word ranking and the switch strip committing early
    assert f["drop_rose"] > f["drop_red"] > f["drop_a"]
    assert f["wordy_colour_min"] > max(f["wordy_other_max"], f["wordy_opening_max"], f["wordy_tail_max"])
    assert f["switch_follows_daisy_20"] <= f["switch_follows_daisy_30"] <= f["switch_follows_daisy_75"]
    # similarity: right pairs beat wrong ones, and even right pairs stay far from 1
    assert f["cosine_wrong_mean"] < f["cosine_right_mean"] < 0.8


def test_the_similarity_note_renders_from_the_measured_figures():
    pytest.importorskip("gradio")
    from clipdiff.app.tabs import similarity

    note = similarity.cosine_note()
    f = claims.figures()
    assert f"{f['generated_right_min']:.2f}" in note and f"{f['generated_wrong_min']:.2f}" in note
    assert "{" not in note


def test_the_docs_name_the_models_the_app_loads():
    """The README and the model card name the shipped U-Net; no other U-Net id is quoted as 'the shipped' one."""
    from clipdiff.checkpoints import PROJECT_ROOT

    shipped = claims.shipped_model_ids()["unet"]
    for name in ("README.md", "checkpoints/README.md"):
        text = (PROJECT_ROOT / name).read_text()
        assert shipped in text, name
        assert set(re.findall(r"unet-[0-9a-f]{10}\b", text)) == {shipped}, name


def test_measuring_runs_on_the_tiny_models(tiny_pipeline, tiny_atlas_dir):
    """The whole measurement, quickly: two seeds, three playback steps; every figure finite."""
    from clipdiff.atlas import Atlas

    measured = claims.measure(tiny_pipeline, Atlas.load(tiny_atlas_dir), {"zero_shot": {"top1": 0.5}}, seeds=2,
                              playback_steps=3)
    f = measured["figures"]
    assert measured["models"]["unet"] == tiny_pipeline.model_id and measured["seeds"] == 2
    assert set(claims.load()["figures"]) == set(f), "the committed file has every figure the code measures"
    assert all(np.isfinite(v) for v in f.values())
    assert 1 <= f["playback_peak_step"] <= 3 and 0 <= f["rose_red_colour_null"] <= 1


def test_the_tour_runs_what_was_measured():
    """The figures describe the tour's own runs: the same prompts, negatives, steps and w."""
    by_id = {e.id: e for e in tour.EXPERIMENTS}
    playback = by_id["playback"].runs[0].generate
    assert playback.prompts == (claims.PLAYBACK_PROMPT,) and playback.sampling.steps == claims.PLAYBACK_STEPS
    negatives = {(r.generate.prompts[0], r.generate.negative) for r in by_id["negative"].runs if r.generate.negative}
    measured = {(prompt, negative) for _, prompt, negative, _ in claims.NEGATIVES}
    assert negatives <= measured
    ood = by_id["out-of-distribution"].runs[0]
    assert ood.generate.prompts == claims.OUT_OF_DISTRIBUTION
    for run in (playback, *(r.generate for r in by_id["negative"].runs), ood.generate):
        assert run.sampling.w == 2.0 and run.sampling.seed == 0


def test_the_claims_command_checks_without_measuring(capsys):
    from clipdiff.__main__ import main

    assert main(["claims", "--check"]) == 0
    assert "every document line agrees" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["claims", "--seeds", "1"])
