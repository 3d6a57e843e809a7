"""Debugging a prompt in the core: the negative condition and the condition switch in the sampler, the pipeline's
jobs for them, and the model tier carrying both per request. Tiny random models; what the shipped model does with a
negative prompt, a switch and word ablation is checked at the end, marked slow, on whatever checkpoints/ holds. The
parser is tested in test_prompts.py, word ablation in test_wording.py, `clipdiff sample` in test_cli_sample.py."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from clipdiff.pipeline import Job, prompt_edits
from clipdiff.sampling import GuidedRun, Switch, run_to_end, sample_guided, switch_step
from clipdiff.schedulers import SAMPLERS, make_scheduler, predicted_x0
from clipdiff.testing import tiny_unet_config
from clipdiff.unet import ConditionalUNet
from clipdiff.wording import word_importance

STEPS = 4


@pytest.fixture(scope="module")
def model() -> ConditionalUNet:
    torch.manual_seed(0)
    m = ConditionalUNet(tiny_unet_config(32))
    with torch.no_grad():
        m.null_embedding.normal_()
    return m.eval()


def conds(n: int, seed: int) -> torch.Tensor:
    return torch.randn(n, 32, generator=torch.Generator().manual_seed(seed)) * 2


def images(model, cond, seeds, sampler="ddim", steps=STEPS, w=2.0, **options) -> torch.Tensor:
    return run_to_end(sample_guided(model, cond, w, seeds, sampler=sampler, steps=steps, **options)).images


# -- the negative condition ----------------------------------------------------------------------------------------
def test_the_negative_replaces_the_null_in_the_unconditional_half(model):
    """eps = (1 + w) eps(prompt) - w eps(negative), checked through the first step's x0."""
    cond, negative, w = conds(1, 1), conds(1, 2), 1.5
    progress = sample_guided(model, cond, w, [4], sampler="ddim", steps=STEPS, uncond=negative, record_every=1)
    first = next(progress)
    progress.close()
    x = torch.randn((3, 16, 16), generator=torch.Generator("cpu").manual_seed(4)).unsqueeze(0)
    t = torch.tensor([first.timestep])
    with torch.no_grad():
        eps_c, eps_n = model(x, t, cond), model(x, t, negative)
    a_bar = make_scheduler("ddim").alphas_cumprod[first.timestep]
    assert torch.allclose(first.x0, predicted_x0(x, (1 + w) * eps_c - w * eps_n, a_bar), atol=1e-4)
    # the recorded "unconditional" x0 is the negative prompt's guess
    assert np.abs(first.record.x0_uncond.astype(int) - to_frames(predicted_x0(x, eps_n, a_bar))).max() <= 1


def to_frames(x: torch.Tensor) -> np.ndarray:
    from clipdiff.sampling import to_uint8
    return to_uint8(x).astype(int)


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_null_rows_are_the_null_bit_for_bit_and_a_negative_changes_its_sample(model, sampler):
    cond = conds(2, 3)
    plain = images(model, cond, [5, 6], sampler)
    explicit_null = images(model, cond, [5, 6], sampler, uncond=model.null_condition(2).detach().clone())
    assert torch.equal(plain, explicit_null), "a null row is exactly what no negative does"
    uncond = model.null_condition(2).detach().clone()
    uncond[1] = conds(1, 9)[0]
    mixed = images(model, cond, [5, 6], sampler, uncond=uncond)
    assert torch.equal(mixed[0], plain[0]), "the other sample keeps its null"
    assert not torch.allclose(mixed[1], plain[1], atol=1e-2)


def test_shapes_that_do_not_fit_are_refused(model):
    with pytest.raises(ValueError, match="uncond must be shaped like cond"):
        GuidedRun(model, conds(2, 0), 1.0, [0, 1], uncond=conds(3, 0))
    with pytest.raises(ValueError, match="one switch fraction per condition"):
        GuidedRun(model, conds(2, 0), 1.0, [0, 1], switch=Switch(conds(2, 1), (0.5,)))
    with pytest.raises(ValueError, match="between 0 and 1"):
        Switch(conds(1, 1), (1.5,))


# -- the condition switch (prompt editing) ------------------------------------------------------------------------
@pytest.mark.parametrize("fraction, steps, expected", [(0.0, 12, 0), (1.0, 12, 12), (0.5, 12, 6), (0.5, 3, 2),
                                                       (0.25, 10, 3), (1 / 3, 12, 4), (0.04, 12, 0)])
def test_switch_step_rounds_half_up(fraction, steps, expected):
    assert switch_step(fraction, steps) == expected


def test_the_conditions_switch_at_round_f_times_steps(model):
    a, b = conds(3, 1), conds(3, 2)
    run = GuidedRun(model, a, 1.0, [0, 1, 2], "ddim", 6, switch=Switch(b, (0.0, 0.5, 1.0)))
    seen = []
    while not run.done:
        x, t, c = run.model_input()
        seen.append([("a" if torch.equal(c[k], a[k]) else "b") for k in range(3)])
        assert torch.equal(c[3:], model.null_condition(3)), "the unconditional half never switches"
        with torch.inference_mode():
            run.advance(model(x, t, c))
    assert seen == [["b", "a", "a"]] * 3 + [["b", "b", "a"]] * 3


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_f1_is_the_first_prompt_alone_and_f0_the_second_same_seed(model, sampler):
    a, b = conds(1, 1)[0], conds(1, 2)[0]
    strip = images(model, torch.stack([a, a, a]), [7, 7, 7], sampler, switch=Switch(torch.stack([b, b, b]),
                                                                                    (0.0, 0.5, 1.0)))
    plain = images(model, torch.stack([b, a, a]), [7, 7, 7], sampler)    # the same batch, no switch
    assert torch.equal(strip[0], plain[0]) and torch.equal(strip[2], plain[2])
    assert not torch.allclose(strip[1], strip[0], atol=1e-3) and not torch.allclose(strip[1], strip[2], atol=1e-3)


def test_pipeline_prompt_edits_and_their_png_parameters(tiny_pipeline):
    jobs = prompt_edits("a white daisy", "a sunflower", [0.0, 0.5, 1.0], 2.0, 3)
    run = tiny_pipeline.prepare(jobs, 3, "ddim")
    switch = run.inputs.switch
    assert switch.at == (0.0, 0.5, 1.0)
    sunflower = tiny_pipeline.prepare([Job("a sunflower", 2.0, 3)]).inputs.cond[0]
    assert torch.equal(switch.cond[0], sunflower)
    assert torch.equal(run.final[0], switch.cond[0]) and torch.equal(run.final[2], run.inputs.cond[2])
    strip = tiny_pipeline.generate(jobs, steps=3, sampler="ddim").images
    alone = tiny_pipeline.generate([Job("a sunflower", 2.0, 3), Job("a white daisy", 2.0, 3),
                                    Job("a white daisy", 2.0, 3)], steps=3, sampler="ddim").images
    assert torch.equal(strip[0], alone[0]) and torch.equal(strip[2], alone[2])
    params = tiny_pipeline.parameters_of(jobs[1], 3, "ddim")
    assert (params["prompt"], params["switch_to"], params["switch_at"]) == ("a white daisy", "a sunflower", 0.5)
    assert "negative_prompt" not in params


def test_pipeline_negatives_encode_once_per_prompt_and_stay_off_when_unused(tiny_pipeline):
    plain = [Job("a red rose", 2.0, 1), Job("a daisy", 2.0, 1)]
    prepared = tiny_pipeline.prepare(plain).inputs
    assert prepared.uncond is None and prepared.switch is None
    assert "negative_prompt" not in tiny_pipeline.parameters_of(plain[0], 3, "ddim")
    jobs = [Job("a red rose", 2.0, 1, negative=" red "), Job("a daisy", 2.0, 1)]
    uncond = tiny_pipeline.prepare(jobs).inputs.uncond
    assert torch.equal(uncond[0], tiny_pipeline.prepare([Job("red", 2.0, 1)]).inputs.cond[0])
    assert torch.equal(uncond[1], tiny_pipeline.model.null_condition(1)[0].detach())
    assert tiny_pipeline.parameters_of(jobs[0], 3, "ddim")["negative_prompt"] == "red"
    with_negative = tiny_pipeline.generate(jobs, steps=3, sampler="ddim").images
    without = tiny_pipeline.generate(plain, steps=3, sampler="ddim").images
    assert torch.equal(with_negative[1], without[1]) and not torch.allclose(with_negative[0], without[0], atol=1e-3)


# -- the model tier carries them per request ------------------------------------------------------------------------
def test_a_served_request_with_a_negative_and_a_switch_makes_the_local_pictures(model):
    import asyncio
    import dataclasses

    from clipdiff.serving.batching import predict_batch
    from clipdiff.serving.loop import SampleRequest, sample_async, start_run

    cond, negative, after = conds(2, 1), conds(2, 2), conds(2, 3)
    r = SampleRequest(cond=cond, w=[2.0, 1.0], seeds=[3, 4], steps=4, sampler="dpmsolver", uncond=negative,
                      switch_cond=after, switch_at=[0.5, 1.0])
    assert r.problems(32) == []

    async def predict(model_input):
        return predict_batch(model, [model_input])[0]

    async def collect():
        return [p async for p in sample_async(start_run(model, r, None)[0], predict)]

    served = asyncio.run(collect())[-1].images
    local = images(model, cond, [3, 4], "dpmsolver", w=torch.tensor([2.0, 1.0]), uncond=negative,
                   switch=Switch(after, (0.5, 1.0)))
    assert torch.equal(served, local)
    bad = dataclasses.replace(r, uncond=torch.full((2, 32), float("nan")), switch_at=[0.5, 2.0])
    found = " | ".join(bad.problems(32))
    assert "uncond must be finite" in found and "one fraction from 0 to 1" in found
    assert "come together" in " ".join(dataclasses.replace(r, switch_at=None).problems(32))


# -- on the shipped model (or whatever checkpoints/ holds now): `pytest -m slow` ------------------------------------
@pytest.fixture(scope="module")
def shipped():
    from clipdiff.checkpoints import DEFAULT_CLIP_DIR, DEFAULT_UNET_DIR
    from clipdiff.pipeline import ClipDiffusionPipeline

    if not (DEFAULT_UNET_DIR / "model.safetensors").is_file() or not DEFAULT_CLIP_DIR.is_dir():
        pytest.skip("no shipped models in checkpoints/")
    return ClipDiffusionPipeline.load(device="cpu")


@pytest.mark.slow
@pytest.mark.parametrize("prompt, negative", [("A rose", "red"),
                                              ("An orange sunflower with a big brown center", "orange")])
def test_a_negative_prompt_moves_the_images_away_from_it_over_seeds(shipped, prompt, negative):
    from clipdiff.evaluate import negative_effect

    figures = negative_effect(shipped, prompt, negative, list(range(16)))
    cosine, score = figures["cosine_to_negative"], figures["clip_score_to_negative"]
    assert cosine["negative"] < cosine["null"] and score["negative"] <= score["null"], figures
    assert figures["lower_on"] >= 0.75, figures


@pytest.mark.slow
def test_a_content_word_matters_more_than_a_filler_word(shipped):
    result = word_importance(shipped, "a red rose", 2.0, 0)
    ranking = result.ranking()
    assert ranking.index("red") < ranking.index("a"), result.to_json()


@pytest.mark.slow
def test_the_switch_strip_ends_are_the_prompts_alone_on_the_shipped_model(shipped):
    a, b = "A round white daisy with a yellow center", "An orange sunflower with a big brown center"
    strip = shipped.generate(prompt_edits(a, b, [0.0, 0.5, 1.0], 2.0, 0)).images
    alone = shipped.generate([Job(b, 2.0, 0), Job(a, 2.0, 0), Job(a, 2.0, 0)]).images
    assert torch.equal(strip[0], alone[0]) and torch.equal(strip[2], alone[2])
