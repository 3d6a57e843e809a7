"""The guided sampler: seeds, guidance algebra, the x0 formula, recording, samplers, cancellation, null conditions."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from clipdiff import sampling
from clipdiff.sampling import (MAX_RECORDS, STEPS_RANGE, W_RANGE, Sampling, from_uint8, record_stride, run_to_end,
                               sample_guided, stream, to_uint8)
from clipdiff.schedulers import SAMPLERS, NoiseSchedule, make_scheduler, predicted_x0
from clipdiff.testing import tiny_unet_config
from clipdiff.unet import ConditionalUNet

STEPS = 4


def tiny_model(null_mode: str = "learned", seed: int = 0, cond_drop_prob: float = 0.1) -> ConditionalUNet:
    torch.manual_seed(seed)
    model = ConditionalUNet(tiny_unet_config(32, null_mode=null_mode, cond_drop_prob=cond_drop_prob))
    with torch.no_grad():  # random, so conditional and unconditional predictions differ
        model.null_embedding.normal_()
    return model.eval()


@pytest.fixture(scope="module")
def model() -> ConditionalUNet:
    return tiny_model()


@pytest.fixture(scope="module")
def cond() -> torch.Tensor:
    return torch.randn(3, 32, generator=torch.Generator().manual_seed(1)) * 2


def generate(model, cond, w, seeds, sampler="ddim", steps=STEPS, record_every=0):
    return run_to_end(sample_guided(model, cond, w, seeds, sampler=sampler, steps=steps, record_every=record_every))


# -- shapes and seeds ------------------------------------------------------------------------------------------

def test_shapes_and_range(model, cond):
    result = generate(model, cond, 1.0, [0, 1, 2], record_every=1)
    assert result.images.shape == (3, 3, 16, 16)
    assert result.images.dtype == torch.float32
    assert torch.isfinite(result.images).all() and result.images.abs().max() <= 1
    rec = result.records[0]
    for frame in (rec.x_t, rec.x0, rec.x0_cond, rec.x0_uncond):
        assert frame.shape == (3, 16, 16, 3) and frame.dtype == np.uint8
    assert rec.eps_gap.shape == rec.guidance.shape == (3, 16, 16) and rec.guidance.dtype == np.float16


def test_to_uint8_maps_range_and_layout():
    x = torch.tensor([-1.0, 0.0, 1.0, 2.0]).view(1, 1, 1, 4).expand(1, 3, 1, 4)
    out = to_uint8(x)
    assert out.shape == (1, 1, 4, 3)
    assert out[0, 0, :, 0].tolist() == [0, 128, 255, 255]


def test_from_uint8_undoes_to_uint8():
    frames = np.random.default_rng(0).integers(0, 256, (2, 5, 4, 3), dtype=np.uint8)
    x = from_uint8(frames)
    assert x.shape == (2, 3, 5, 4) and x.min() >= -1 and x.max() <= 1
    assert np.array_equal(to_uint8(x), frames)


def test_sampling_settings_say_what_lies_outside_their_bounds():
    assert Sampling().problems() == [] and Sampling().steps in range(STEPS_RANGE[0], STEPS_RANGE[1] + 1)
    assert Sampling(w=W_RANGE[1] + 1, steps=0, sampler="euler", seed=-1).problems() == [
        "w must be between -10 and 10, not 11", "steps must be between 1 and 400, not 0",
        "sampler must be one of ddpm, ddim, dpmsolver, dpmsolver-karras, fast, not 'euler'",
        "seed must be between 0 and 2147483647, not -1"]


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_same_seed_same_pixels_different_seed_different(model, cond, sampler):
    a = generate(model, cond[:2], 2.0, [5, 6], sampler=sampler, steps=2).images
    b = generate(model, cond[:2], 2.0, [5, 6], sampler=sampler, steps=2).images
    c = generate(model, cond[:2], 2.0, [7, 6], sampler=sampler, steps=2).images
    assert torch.equal(a, b)
    assert not torch.allclose(a[0], c[0], atol=1e-2)
    assert torch.equal(a[1], c[1])  # the other sample's seed did not change


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_sample_does_not_depend_on_batch_mates(model, cond, sampler):
    """sampling.py promises a sample depends only on its own seed, condition and w.

    Bitwise it does not quite hold on the CPU: a different batch size picks different conv/matmul kernels,
    which changes the last float bits (seen: up to ~4e-4 after DDIM's clipping). It holds to within one
    uint8 level, which is what a saved PNG shows.
    """
    w = torch.tensor([2.0, -0.5, 0.0])
    together = generate(model, cond, w, [11, 12, 13], sampler=sampler).images
    alone = generate(model, cond[1:2], w[1:2], [12], sampler=sampler).images
    assert torch.allclose(together[1], alone[0], atol=1e-3)
    diff = np.abs(to_uint8(together[1:2]).astype(int) - to_uint8(alone).astype(int))
    assert diff.max() <= 1


def test_one_seed_per_condition_is_required(model, cond):
    with pytest.raises(ValueError, match="one seed per condition"):
        next(sample_guided(model, cond, 1.0, [0, 1], steps=2))


def test_initial_noise_is_per_seed_cpu_noise():
    noise = sampling.initial_noise([3, 4], (3, 8, 8))
    assert torch.equal(noise[0], torch.randn((3, 8, 8), generator=torch.Generator("cpu").manual_seed(3)))
    assert torch.equal(sampling.initial_noise([4], (3, 8, 8))[0], noise[1])


# -- guidance algebra -------------------------------------------------------------------------------------------

def test_w0_is_conditional_and_w_minus1_is_unconditional(model, cond):
    w = torch.tensor([0.0, -1.0, 2.0])
    result = generate(model, cond, w, [1, 2, 3], record_every=1)
    assert len(result.records) == STEPS
    for rec in result.records:
        assert np.array_equal(rec.x0[0], rec.x0_cond[0])        # w = 0: conditional only
        assert not rec.guidance[0].any(), "w = 0: the guidance term w (eps_cond - eps_uncond) is zero everywhere"
        assert rec.eps_gap[0].any(), "while the prompt still changes the prediction"
        assert np.array_equal(rec.x0[1], rec.x0_uncond[1])      # w = -1: unconditional only
        assert np.array_equal(rec.guidance[1], rec.eps_gap[1]), "w = -1: the guidance term is -(eps_c - eps_u)"
        assert np.allclose(rec.guidance[2], 2 * rec.eps_gap[2].astype(np.float32), rtol=2e-3, atol=1e-3), "w = 2: twice"
    # the checks above could fail: with w = 2 the guided x0 is neither prediction
    first = result.records[0]
    assert not np.array_equal(first.x0[2], first.x0_cond[2])
    assert not np.array_equal(first.x0[2], first.x0_uncond[2])


def test_guided_eps_is_the_cfg_combination(model, cond):
    """eps = (1 + w) eps_cond - w eps_uncond, checked through the first step's float x0."""
    w = 1.5
    progress = sample_guided(model, cond[:1], w, [4], sampler="ddim", steps=STEPS)
    first = next(progress)
    progress.close()
    x = sampling.initial_noise([4], (3, 16, 16))
    t = torch.tensor([first.timestep])
    with torch.no_grad():
        eps_c = model(x, t, cond[:1])
        eps_u = model(x, t, model.null_condition(1))
    a_bar = make_scheduler("ddim").alphas_cumprod[first.timestep]
    expected = predicted_x0(x, (1 + w) * eps_c - w * eps_u, a_bar)
    assert torch.allclose(first.x0, expected, atol=1e-4)


@pytest.mark.parametrize("null_mode", ["learned", "zero-mask"])
def test_w_minus1_ignores_the_condition(null_mode):
    m = tiny_model(null_mode)
    a, b = torch.randn(2, 1, 32, generator=torch.Generator().manual_seed(3))
    uncond = [generate(m, c, -1.0, [9], steps=2).images for c in (a, b)]
    cond_only = [generate(m, c, 0.0, [9], steps=2).images for c in (a, b)]
    assert torch.equal(uncond[0], uncond[1])
    assert not torch.allclose(cond_only[0], cond_only[1], atol=1e-3)


# -- the x0 formula ----------------------------------------------------------------------------------------------

def test_predicted_x0_against_hand_computation():
    # a_bar = 0.64: sqrt = 0.8, sqrt(1 - a_bar) = 0.6; (1.0 - 0.6 * 0.5) / 0.8 = 0.875
    x0 = predicted_x0(torch.tensor([1.0, -0.2]), torch.tensor([0.5, 1.0]), 0.64)
    assert torch.allclose(x0, torch.tensor([0.875, (-0.2 - 0.6) / 0.8]))


def test_first_step_x0_uses_the_reference_schedule(model, cond):
    """The sampler's x0 at t = 399 matches the hand-built linear schedule (T=400, betas 1e-4..0.02)."""
    first = next(sample_guided(model, cond[:1], 0.0, [2], sampler="ddim", steps=STEPS))
    assert first.timestep == 399  # trailing spacing starts at pure noise
    betas = np.linspace(1e-4, 0.02, 400, dtype=np.float64)
    a_bar = float(np.cumprod(1 - betas)[399])
    x = sampling.initial_noise([2], (3, 16, 16))
    with torch.no_grad():
        eps = model(x, torch.tensor([399]), cond[:1])
    expected = (x - np.sqrt(1 - a_bar) * eps) / np.sqrt(a_bar)
    assert torch.allclose(first.x0, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_every_sampler_starts_from_pure_noise_and_walks_down(sampler):
    scheduler = make_scheduler(sampler)
    scheduler.set_timesteps(12)
    t = scheduler.timesteps.tolist()
    assert t[0] == 399 and len(t) == 12 and all(a > b for a, b in zip(t, t[1:]))


def test_karras_steps_are_packed_at_low_noise():
    even, karras = make_scheduler("dpmsolver"), make_scheduler("dpmsolver-karras")
    even.set_timesteps(12)
    karras.set_timesteps(12)
    low = lambda s: int((s.timesteps < 100).sum())  # noqa: E731
    assert low(karras) >= 2 * low(even) and karras.timesteps[-1] < even.timesteps[-1]


# -- recording ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("steps,every,expected_steps", [
    (7, 1, [0, 1, 2, 3, 4, 5, 6]),
    (7, 2, [0, 2, 4, 6]),
    (7, 3, [0, 3, 6]),
    (8, 3, [0, 3, 6, 7]),     # the last step is always recorded
    (5, 10, [0, 4]),
    (4, 0, []),               # 0 records nothing
])
def test_recording_stride_and_frame_count(model, cond, steps, every, expected_steps):
    result = generate(model, cond[:1], 1.0, [0], steps=steps, record_every=every)
    assert [r.step for r in result.records] == expected_steps
    scheduler = make_scheduler("ddim")
    scheduler.set_timesteps(steps)
    assert [r.timestep for r in result.records] == [int(scheduler.timesteps[i]) for i in expected_steps]


@pytest.mark.parametrize("steps", [1, 99, 100, 101, 150, 199, 200, 1000, 1001])
def test_record_count_never_exceeds_max_records(steps):
    stride = record_stride(steps, 1)
    recorded = [i for i in range(steps) if i % stride == 0 or i == steps - 1]
    assert len(recorded) <= MAX_RECORDS
    assert recorded[0] == 0 and recorded[-1] == steps - 1
    if steps <= MAX_RECORDS:
        assert stride == 1  # no thinning when everything fits


def test_max_records_cap_in_the_sampler(model, cond, monkeypatch):
    monkeypatch.setattr(sampling, "MAX_RECORDS", 3)
    result = generate(model, cond[:1], 1.0, [0], steps=5, record_every=1)
    assert [r.step for r in result.records] == [0, 2, 4]


# -- samplers and cancellation -----------------------------------------------------------------------------------

@pytest.mark.parametrize("sampler", SAMPLERS)
def test_every_sampler_runs_and_yields_each_step(model, cond, sampler):
    events = list(sample_guided(model, cond[:2], 1.0, [0, 1], sampler=sampler, steps=3))
    assert [e.step for e in events] == [1, 2, 3] and all(e.total == 3 for e in events)
    assert all(e.images is None for e in events[:-1])
    images = events[-1].images
    assert images.shape == (2, 3, 16, 16) and torch.isfinite(images).all()
    assert events[-1].x0.shape == (2, 3, 16, 16)


def test_unknown_sampler_is_an_error():
    with pytest.raises(ValueError, match="unknown sampler"):
        make_scheduler("euler")


def test_closing_the_generator_stops_the_work(model, cond):
    calls = []
    hook = model.register_forward_hook(lambda *_: calls.append(1))
    try:
        progress = sample_guided(model, cond[:1], 1.0, [0], steps=10)
        for _ in range(3):
            next(progress)
        progress.close()
        assert len(calls) == 3       # one doubled forward per step, nothing after the close
        with pytest.raises(StopIteration):
            next(progress)
        assert len(calls) == 3
    finally:
        hook.remove()


# -- null conditions and context dropout ---------------------------------------------------------------------------

def test_null_condition_learned_is_the_null_embedding():
    m = tiny_model("learned")
    null = m.null_condition(3)
    assert null.shape == (3, 32)
    assert torch.equal(null, m.null_embedding.detach().expand(3, -1))
    assert null.abs().sum() > 0


def test_null_condition_zero_mask_is_zeros():
    m = tiny_model("zero-mask")
    null = m.null_condition(3)
    assert null.shape == (3, 32) and torch.equal(null, torch.zeros(3, 32))


def test_drop_condition_learned_is_per_sample():
    m = tiny_model("learned", cond_drop_prob=0.3)
    cond = torch.randn(4000, 32) + 5  # never equal to the null embedding by chance
    out = m.drop_condition(cond, torch.Generator().manual_seed(0))
    is_null = (out == m.null_embedding.detach()).all(dim=1)
    is_kept = (out == cond).all(dim=1)
    assert (is_null | is_kept).all()                 # every row whole: null or untouched
    assert abs(is_null.float().mean().item() - 0.3) < 0.03


def test_drop_condition_zero_mask_is_per_element():
    m = tiny_model("zero-mask", cond_drop_prob=0.3)
    cond = torch.randn(2000, 32) + 5
    out = m.drop_condition(cond, torch.Generator().manual_seed(0))
    zero = out == 0
    assert torch.equal(out[~zero], cond[~zero])      # kept elements are untouched
    assert abs(zero.float().mean().item() - 0.3) < 0.01
    per_row = zero.float().mean(dim=1)
    assert ((per_row > 0) & (per_row < 1)).float().mean() > 0.9   # rows are mixed, not all-or-nothing


def test_drop_condition_is_seeded():
    m = tiny_model("learned", cond_drop_prob=0.5)
    cond = torch.randn(64, 32)
    a = m.drop_condition(cond, torch.Generator().manual_seed(4))
    b = m.drop_condition(cond, torch.Generator().manual_seed(4))
    assert torch.equal(a, b)


def test_schedule_is_the_reference():
    s = NoiseSchedule()
    assert (s.num_train_timesteps, s.beta_start, s.beta_end, s.beta_schedule) == (400, 1e-4, 0.02, "linear")


# -- DDPM's step noise and streaming ------------------------------------------------------------------------------
def test_ddpm_step_noise_is_not_another_seeds_initial_noise(model, cond, monkeypatch):
    """Images with seeds s and s + 1 must not share noise: DDPM's per-step draws get a stream of their own."""
    import diffusers.schedulers.scheduling_ddpm as ddpm_module

    drawn = []

    def recording_randn(*args, **kwargs):
        out = real_randn(*args, **kwargs)
        drawn.append(out.clone())
        return out

    real_randn = ddpm_module.randn_tensor
    monkeypatch.setattr(ddpm_module, "randn_tensor", recording_randn)
    generate(model, cond[:1], 1.0, [0], sampler="ddpm", steps=3)
    assert drawn, "DDPM drew no step noise"
    starts = sampling.initial_noise(list(range(-2, 6)), (3, 16, 16))
    for noise in drawn:
        for start in starts:
            assert not torch.allclose(noise[0], start)


def test_stream_throttles_previews_and_always_ends_with_the_final_images(tiny_pipeline):
    from clipdiff.pipeline import images_per_prompt

    jobs = images_per_prompt(["a red rose", "a white daisy"], 2.0, 0, 3)
    every = list(stream(tiny_pipeline.run(jobs, 5, "ddim", record_every=1), preview_every_s=0))
    assert [(f.step, f.done) for f in every] == [(1, False), (2, False), (3, False), (4, False), (5, True)]
    assert all(f.records is None for f in every[:-1]) and len(every[-1].records) == 5
    few = list(stream(tiny_pipeline.run(jobs, 5, "ddim", record_every=1), preview_every_s=1e9))
    assert [(f.step, f.done) for f in few] == [(1, False), (5, True)], "only the first step's preview"
    assert few[-1].images.shape == (6, 16, 16, 3) and len(few[-1].records) == 5, "every step still recorded"
    assert np.array_equal(few[-1].images, every[-1].images)


def test_a_run_ahead_yields_the_same_progress_and_samples_while_its_reader_is_busy():
    import threading

    produced, two_ahead, closed = [], threading.Event(), []
    def steps():
        try:
            for k in range(10):
                produced.append(k)
                if len(produced) == 2:
                    two_ahead.set()
                yield k
        finally:
            closed.append(threading.current_thread().name)

    ahead = sampling.run_ahead(steps(), steps=2)
    assert next(ahead) == 0
    assert two_ahead.wait(10), "the run went on while its reader held step 0"
    assert list(ahead) == list(range(1, 10)) and closed == ["clipdiff-run"]


def test_leaving_a_run_ahead_stops_it_within_its_depth_and_errors_reach_the_reader():
    import threading

    produced, closed = [], threading.Event()
    def endless():
        try:
            k = 0
            while True:
                produced.append(k)
                yield k
                k += 1
        finally:
            closed.set()

    ahead = sampling.run_ahead(endless(), steps=2)
    assert next(ahead) == 0
    ahead.close()
    assert closed.wait(10), "the run was closed in its own thread once its reader left"
    assert len(produced) <= 1 + 2 + 1, "read, held, and the one in progress: no more"

    def failing():
        yield 1
        raise RuntimeError("the forward failed")
    with pytest.raises(RuntimeError, match="the forward failed"):
        list(sampling.run_ahead(failing()))


def test_once_stop_is_set_the_sampler_stops_after_the_step_in_progress_and_says_where(tiny_pipeline):
    import threading

    from clipdiff.pipeline import images_per_prompt

    jobs = images_per_prompt(["a red rose"], 2.0, 0, 2)
    stop, steps_run = threading.Event(), []
    def counted():
        for p in tiny_pipeline.run(jobs, 50, "ddim"):
            steps_run.append(p.step)
            yield p

    frames, watched = [], counted()
    for f in stream(watched, preview_every_s=1e9, stop=stop):
        frames.append(f)
        if f.step == 1:
            stop.set()                                     # Stop pressed while step 1's preview is on screen
    assert [(f.step, f.stopped, f.done) for f in frames] == [(1, False, False), (2, True, False)]
    assert steps_run == [1, 2], "not one step more than the one in progress"
    assert watched.gi_frame is None, "the sampler was closed, not left to the garbage collector"
    assert frames[-1].images.shape == (2, 16, 16, 3) and frames[-1].records is None, "the step's x0, nothing saved"
    last = list(stream(tiny_pipeline.run(jobs, 1, "ddim"), stop=threading.Event()))
    assert [(f.done, f.stopped) for f in last] == [(True, False)]
    stopped_late = threading.Event()
    stopped_late.set()
    assert [(f.done, f.stopped) for f in stream(tiny_pipeline.run(jobs, 1, "ddim"), stop=stopped_late)] == \
        [(True, False)], "a run whose last step is done finishes: its images are made"
