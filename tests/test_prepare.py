"""A run's inputs are built once (pipeline.prepare) and carried as one value: each distinct text of a run is encoded
once, whatever reads the run afterwards (the sampler, the CLIP scores, playback, the session's last run, a served
request); and the one sampler registry that the controls, the caveats, the tour and the sampler read."""
from __future__ import annotations

from collections import Counter

import pytest
import torch

gr = pytest.importorskip("gradio")

from clipdiff import tour  # noqa: E402
from clipdiff.app.controls import sampler_info  # noqa: E402
from clipdiff.app.tabs import debug, generate  # noqa: E402
from clipdiff.pipeline import Job  # noqa: E402
from clipdiff.sampling import GuidedRun  # noqa: E402
from clipdiff.schedulers import (REGISTRY, SAMPLERS, STUDENT_SAMPLERS, make_scheduler, sampler_spec,  # noqa: E402
                                 step_options)
from clipdiff.serving.loop import SampleRequest, start_run  # noqa: E402


@pytest.fixture
def encoded(ctx, monkeypatch) -> Counter:
    """Every text the run's encoder is asked to embed, counted (its own cache hides repeats, so count the asks)."""
    encoder = ctx.models.need_pipeline().encoder
    asked = Counter()
    original = encoder.encode_text

    def counting(texts):
        asked.update(texts)
        return original(texts)

    monkeypatch.setattr(encoder, "encode_text", counting)
    return asked


def last(updates):
    return list(updates)[-1]


def test_a_plain_generate_run_encodes_each_distinct_text_once(ctx, encoded):
    gallery, status, _, run = last(generate.generate(ctx, "a red rose\na daisy", 2.0, 2, "ddim", 3, 2, "red"))
    assert status.startswith("Done") and len(gallery) == 4
    run.playback_with_cosines(ctx.models.encoder)        # what the playback tab asks of the last run
    assert encoded == Counter({"a red rose": 1, "a daisy": 1, "red": 1})


def test_a_prompt_switch_encodes_each_distinct_text_once(ctx, encoded):
    prompt = "[a daisy:a sunflower:0.5]\na rose"
    gallery, status, _, run = last(generate.generate(ctx, prompt, 2.0, 2, "ddim", 3, 1, "red"))
    assert status.startswith("Done") and len(gallery) == 2
    assert run.params[0]["switch_to"] == "a sunflower" and "first prompt" in run.playback.references
    assert encoded == Counter({"a daisy": 1, "a sunflower": 1, "a rose": 1, "red": 1})
    encoded.clear()
    *_, status, _, run = last(debug.prompt_edit(ctx, "a daisy", "a tulip", "0, 0.5, 1", 3, 2.0, 2, "ddim"))
    assert "CLIP score of each picture against either prompt" in status
    assert encoded == Counter({"a daisy": 1, "a tulip": 1})


def test_prepare_parses_once_and_holds_the_run_in_one_value(tiny_pipeline):
    jobs = [Job("[a daisy:a sunflower:2]", 1.5, 4), Job("a rose", -1.0, 5, negative="red")]
    run = tiny_pipeline.prepare(jobs, steps=4, sampler="ddim")
    assert [(j.prompt, j.switch_to, j.switch_at) for j in run.jobs] == [("a daisy", "a sunflower", 0.5),
                                                                       ("a rose", None, 1.0)]
    assert run.edits[0].at_step == 2 and not run.edits[1].switches
    assert run.ws == [1.5, -1.0] and run.inputs.seeds == (4, 5) and (run.steps, run.sampler) == (4, "ddim")
    assert torch.equal(run.final[0], run.inputs.switch.cond[0]) and torch.equal(run.final[1], run.inputs.cond[1])
    assert torch.equal(run.inputs.uncond[1], tiny_pipeline.prepare([Job("red", 0.0, 0)]).inputs.cond[0])
    assert torch.equal(run.inputs.uncond[0], tiny_pipeline.model.null_condition(1)[0].detach())


def test_a_served_request_starts_the_same_run_as_the_local_sampler(tiny_pipeline):
    run = tiny_pipeline.prepare([Job("[a daisy:a rose:0.5]", 2.0, 1, negative="red"), Job("a tulip", 0.5, 2)],
                                steps=3, sampler="ddpm")
    local = GuidedRun.of(tiny_pipeline.model, run.inputs, tiny_pipeline.config.schedule)
    served, answering = start_run(tiny_pipeline.model, SampleRequest.of(run.inputs, model_id=tiny_pipeline.model_id),
                                  tiny_pipeline.config.schedule)
    assert answering is tiny_pipeline.model
    while not local.done:
        asked, asked_served = local.model_input(), served.model_input()
        assert all(torch.equal(a, b) for a, b in zip(asked, asked_served))
        with torch.inference_mode():
            eps = tiny_pipeline.model(*asked)
        assert torch.equal(local.advance(eps).x0, served.advance(eps).x0)


def test_the_sampler_asks_the_scheduler_to_scale_its_input(tiny_pipeline):
    """Euler and Heun scale x before the U-Net sees it: the loop must ask, not assume the identity."""
    run = GuidedRun.of(tiny_pipeline.model, tiny_pipeline.prepare([Job("a rose", 2.0, 1)], 2, "ddim").inputs)
    asked = []
    run.scheduler.scale_model_input = lambda sample, t: asked.append(int(t)) or sample * 2
    x_in, t, _ = run.model_input()
    assert asked == [int(t[0])] and torch.equal(x_in[:1], run.x * 2)


def test_one_registry_says_what_a_sampler_is():
    assert SAMPLERS + STUDENT_SAMPLERS == tuple(REGISTRY) and STUDENT_SAMPLERS == ("fast",)
    assert all(not REGISTRY[s].student for s in SAMPLERS)
    for name, spec in REGISTRY.items():
        assert spec.name == name and spec.min_steps >= 1 and f"{name}: {spec.description}" in sampler_info(REGISTRY)
        assert type(make_scheduler(name)).__name__.endswith("Scheduler")
    assert [s for s in SAMPLERS if REGISTRY[s].stochastic] == ["ddpm"]
    assert "generator" in step_options(make_scheduler("ddpm"), generator=[], unused=1)
    assert "unused" not in step_options(make_scheduler("ddpm"), generator=[], unused=1)
    with pytest.raises(ValueError, match="unknown sampler 'euler'; choose one of ddpm, ddim"):
        sampler_spec("euler")
    cost = next(e for e in tour.EXPERIMENTS if e.id == "cost")
    titles = {REGISTRY[r.generate.sampling.sampler].title for r in cost.runs}
    assert all(r.label.startswith(REGISTRY[r.generate.sampling.sampler].title) for r in cost.runs)
    assert titles == {REGISTRY[s].title for s in SAMPLERS}, "the cost experiment runs every sampler of the teacher"
