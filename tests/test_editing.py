"""The forward process, SDEdit's start part way and DDIM inversion, in the core (no app)."""
from __future__ import annotations

import pytest
import torch

from clipdiff.inversion import round_trip
from clipdiff.pipeline import Job, photo_edits, start_of
from clipdiff.sampling import Start, run_to_end, sample_guided, to_uint8
from clipdiff.schedulers import NoiseSchedule, alphas_cumprod, forward_noise, make_scheduler, signal_to_noise

SAMPLERS = ("ddpm", "ddim", "dpmsolver", "dpmsolver-karras")


def photo(size: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_forward_noise_is_the_closed_form_with_the_training_schedule():
    x0, eps = photo(8)[None].expand(3, -1, -1, -1), torch.randn(3, 3, 8, 8)
    ts = torch.tensor([0, 200, 399])
    a_bar = alphas_cumprod()
    expected = a_bar[ts].sqrt().view(-1, 1, 1, 1) * x0 + (1 - a_bar[ts]).sqrt().view(-1, 1, 1, 1) * eps
    assert torch.allclose(forward_noise(x0, ts, eps), expected, atol=1e-6)
    assert torch.allclose(a_bar, make_scheduler("ddpm").alphas_cumprod), "the samplers' own schedule"
    snr = signal_to_noise()
    assert snr.shape == (400,) and bool((snr[1:] < snr[:-1]).all()), "the signal fades monotonically"
    assert 0.01 < float(a_bar[-1]) < 0.03, "T = 400 linear betas leave a trace of the photo at the last step"
    other = NoiseSchedule(num_train_timesteps=100)
    assert alphas_cumprod(other).shape == (100,)


def test_a_start_takes_the_steps_below_its_fraction_of_t():
    timesteps = torch.tensor([399, 300, 200, 100, 0])
    assert Start(torch.zeros(1, 3, 2, 2), 1.0).first_step(timesteps, 400) == 0
    assert Start(torch.zeros(1, 3, 2, 2), 0.5).first_step(timesteps, 400) == 3, "t < 200: the steps at 100 and 0"
    assert Start(torch.zeros(1, 3, 2, 2), 0.0).first_step(timesteps, 400) == 5, "no step at all"
    with pytest.raises(ValueError, match="fraction from 0 to 1"):
        Start(torch.zeros(1, 3, 2, 2), 1.5)


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_an_edit_from_1_is_a_plain_generation_and_from_0_the_photo(tiny_pipeline, sampler):
    x0 = photo(tiny_pipeline.image_size)
    plain = tiny_pipeline.generate([Job("a red rose", 2.0, 5)], 4, sampler).images
    from_noise = tiny_pipeline.generate(photo_edits(x0, "a red rose", 2.0, 5, 1.0), 4, sampler).images
    assert torch.equal(plain, from_noise), "from 1 T the photo is not used at all"
    kept = tiny_pipeline.generate(photo_edits(x0, "a red rose", 2.0, 5, 0.0), 4, sampler).images
    assert (to_uint8(kept) == to_uint8(x0[None])).all(), "from 0 T nothing happens to the photo"
    half = tiny_pipeline.generate(photo_edits(x0, "a red rose", 2.0, 5, 0.5), 4, sampler).images
    assert (half[0] - x0).abs().mean() < (plain[0] - x0).abs().mean(), "half way keeps more of the photo"


def test_an_edit_records_only_the_steps_it_takes(tiny_pipeline):
    x0 = photo(tiny_pipeline.image_size)
    result = tiny_pipeline.generate(photo_edits(x0, "a daisy", 2.0, 1, 0.5), 6, "ddim", record_every=1)
    assert [r.timestep for r in result.records] == [199, 132, 66], "ddim's 6 trailing steps below 200"
    assert [r.step for r in result.records] == [3, 4, 5], "numbered as in the full run"
    cond = tiny_pipeline.prepare([Job("a", 2.0, 0)]).inputs.cond
    unchanged = list(sample_guided(tiny_pipeline.model, cond, 2.0, [0], "ddim", 6, start=Start(x0[None], 0.0)))
    assert len(unchanged) == 1 and unchanged[0].images is not None, "a run of no steps still ends with images"


def test_one_start_for_a_batch(tiny_pipeline):
    x0 = photo(tiny_pipeline.image_size)
    jobs = photo_edits(x0, "a", 2.0, 1, 0.5) + photo_edits(x0, "b", 2.0, 1, 0.2)
    with pytest.raises(ValueError, match="one start"):
        start_of(jobs)
    assert start_of([Job("a", 2.0, 1)]) is None
    assert tiny_pipeline.prepare(jobs[:1], 4, "ddim").inputs.start.at == 0.5, "prepare builds the start"
    assert tiny_pipeline.parameters_of(jobs[0], 4, "ddim")["edited_photo_at"] == 0.5


class ConstantNoise(torch.nn.Module):
    """A U-Net stand-in that always predicts zero noise: DDIM's update is then a pure rescaling, exactly invertible."""

    def __init__(self):
        super().__init__()
        self.unused = torch.nn.Parameter(torch.zeros(()))

    def forward(self, x, t, cond):
        return torch.zeros_like(x)


def test_inversion_walks_up_and_back_down():
    x0 = photo(8)[None]
    trip = round_trip(ConstantNoise(), x0, torch.zeros(1, 4), steps=10)
    assert float(trip.error[0]) < 0.01, "an exact model inverts exactly"
    a_bar = alphas_cumprod()
    assert torch.allclose(trip.noise, x0 * (a_bar[-1] / a_bar[0]).sqrt(), atol=1e-5), \
        "with no noise predicted, x_T is x0 scaled by sqrt(a_bar_T / a_bar_0): the walk goes all the way up"


def test_inversion_round_trip_on_a_model_says_its_error(tiny_pipeline):
    x0 = photo(tiny_pipeline.image_size)[None]
    trip = round_trip(tiny_pipeline.model, x0, tiny_pipeline.prepare([Job("a daisy", 0.0, 0)]).inputs.cond, steps=4)
    assert trip.noise.shape == x0.shape and trip.images.shape == x0.shape
    assert torch.isfinite(trip.error).all() and float(trip.error[0]) >= 0
    expected = float((trip.images - x0).abs().mean() * 127.5)
    assert float(trip.error[0]) == pytest.approx(expected, rel=1e-5)
