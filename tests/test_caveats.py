"""When a CLIP score says little: the settings that make it unreliable are named, and every score comes with what
pure noise scores against the same prompt."""
from __future__ import annotations

import pytest
import torch

from clipdiff.caveats import MAX_TRUSTED_W, NOISE_SAMPLES, caveat, noise_note, noise_scores
from clipdiff.sampling import DEFAULT_SAMPLER, DEFAULT_STEPS, DEFAULT_W
from clipdiff.schedulers import REGISTRY


def test_few_steps_and_extreme_guidance_are_named_and_the_defaults_are_not():
    assert caveat(DEFAULT_STEPS, DEFAULT_SAMPLER, DEFAULT_W) is None
    assert caveat(1, "ddpm", 2.0).startswith("1 ddpm step leaves the image unfinished (about 50 are needed)")
    assert caveat(REGISTRY["ddim"].min_steps - 1, "ddim", 2.0).startswith("9 ddim steps")
    assert caveat(REGISTRY["ddim"].min_steps, "ddim", 2.0) is None
    with pytest.raises(ValueError, match="unknown sampler 'euler'"):
        caveat(100, "euler", 2.0)      # an unknown sampler is an error, not "needs 0 steps"
    assert caveat(12, "dpmsolver-karras", MAX_TRUSTED_W + 1).startswith("w = 5 is far past the guidance")
    assert caveat(12, "dpmsolver-karras", -2.0) is None, "pushed away from the prompt: a low score is the point"


def test_the_noise_baseline_is_the_same_noise_every_time(tiny_pipeline):
    conditions = tiny_pipeline.encoder.encode_text(["a red rose", "a daisy"])
    a = noise_scores(tiny_pipeline.encoder, conditions, 16)
    assert a.shape == (2,) and torch.equal(a, noise_scores(tiny_pipeline.encoder, conditions, 16))
    assert ((0 <= a) & (a <= 100)).all()


def test_the_noise_pictures_are_encoded_once_per_encoder_and_size(tiny_pipeline, monkeypatch):
    """Every run's captions show the baseline: the noise pictures' embeddings are made once, not per run, and the
    baseline is the one a fresh encoding gives."""
    from clipdiff.similarity import unit

    encoder = tiny_pipeline.encoder
    conditions = encoder.encode_text(["a red rose", "a daisy"])
    fresh_noise = torch.randn(NOISE_SAMPLES, 3, 12, 12, generator=torch.Generator().manual_seed(0)).clamp(-1, 1)
    expected = (100 * (unit(conditions) @ unit(encoder.encode_image(fresh_noise)).T).clamp_min(0)).mean(1)
    calls = []
    real = encoder.encode_image
    monkeypatch.setattr(encoder, "encode_image", lambda images: calls.append(len(images)) or real(images))
    first = noise_scores(encoder, conditions, 12)
    assert torch.allclose(first, expected, atol=1e-4) and calls == [NOISE_SAMPLES]
    assert torch.equal(noise_scores(encoder, conditions[:1], 12), first[:1]) and calls == [NOISE_SAMPLES]
    noise_scores(encoder, conditions, 10)
    assert calls == [NOISE_SAMPLES, NOISE_SAMPLES], "another size is other noise"


def test_a_baseline_of_0_says_noise_scores_0_or_below():
    """A CLIP score clamps negative cosines to 0, so a 0 is "0 or below", never a bare 0 that reads like a bug."""
    assert [noise_note(b) for b in (0.0, 0.3, 0.6, 11.4)] == ["noise <= 0", "noise < 1", "noise 1", "noise 11"]


def test_a_one_step_run_says_its_scores_are_unreliable(ctx):
    pytest.importorskip("gradio")
    from clipdiff.app.tabs import generate

    gallery, status, *_ = list(generate.generate(ctx, "A deep red rose flower", 2.0, 1, "ddpm", 0, 1))[-1]
    assert gallery[0][1].endswith(") UNRELIABLE") and "(noise " in gallery[0][1]
    assert "**These CLIP scores say little:** 1 ddpm step leaves the image unfinished" in status
    gallery, status, *_ = list(generate.generate(ctx, "A deep red rose flower", 2.0, 6, "dpmsolver-karras", 0, 1))[-1]
    assert "UNRELIABLE" not in gallery[0][1] and "what pure noise scores against the same prompt" in status


def test_a_run_s_steps_are_counted_in_words_singular_or_plural():
    from clipdiff.caveats import caveat, steps_of

    assert steps_of(1, "dpmsolver-karras") == "1 dpmsolver-karras step"
    assert steps_of(12, "ddim") == "12 ddim steps"
    assert caveat(1, "ddim", 2.0).startswith("1 ddim step leaves") and caveat(2, "ddim", 2.0).startswith("2 ddim steps leave")
