"""clipdiff.pipeline over the tiny models: runs are reproducible per seed and prompt and cancel between steps, jobs
are laid out as the app and the CLI expect, and a job given an embedding samples as its prompt would. A run's
inputs (pipeline.prepare) are tested in test_prepare.py."""
from __future__ import annotations

import torch

from clipdiff.pipeline import Job


def test_pipeline_run_cancels_between_steps(tiny_pipeline):
    calls = []
    hook = tiny_pipeline.model.register_forward_hook(lambda *_: calls.append(1))
    try:
        run = tiny_pipeline.run([Job("a red rose", 2.0, 0)], steps=10, sampler="ddim")
        next(run)
        next(run)
        run.close()
        assert len(calls) == 2
    finally:
        hook.remove()


def test_pipeline_seed_and_prompt(tiny_pipeline):
    jobs = [Job("a red rose", 2.0, 3), Job("a white daisy", 2.0, 3)]
    a = tiny_pipeline.generate(jobs, steps=3, sampler="ddim").images
    b = tiny_pipeline.generate(jobs, steps=3, sampler="ddim").images
    assert torch.equal(a, b)
    assert not torch.allclose(a[0], a[1], atol=1e-3)  # same seed, different prompt


def test_job_layouts():
    from clipdiff.pipeline import images_per_prompt, sweep

    assert [(j.prompt, j.seed) for j in images_per_prompt(["a", "b"], 1.0, 10, 2)] == \
        [("a", 10), ("a", 11), ("b", 10), ("b", 11)]
    assert [(j.w, j.prompt, j.seed) for j in sweep(["a", "b"], [0.0, 2.0], 5)] == \
        [(0.0, "a", 5), (0.0, "b", 5), (2.0, "a", 5), (2.0, "b", 5)]


def test_embedding_job_equals_its_prompt_job(tiny_pipeline):
    raw = tiny_pipeline.encoder.encode_text(["a red rose"])[0]
    jobs = [Job("a white daisy", 1.0, 2), Job("a red rose", 1.0, 2), Job("label only", 1.0, 2, embedding=raw)]
    cond = tiny_pipeline.prepare(jobs).inputs.cond
    assert torch.equal(cond[1], cond[2])
    images = tiny_pipeline.generate(jobs, steps=2, sampler="ddim").images
    assert torch.equal(images[1], images[2])
    assert tiny_pipeline.parameters_of(jobs[2], 2, "ddim")["conditioned_on"] == "embedding"
