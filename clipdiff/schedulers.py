"""The noise schedule (the reference's: T=400, linear betas 1e-4..0.02) and the samplers, from diffusers."""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

SAMPLERS = ("ddpm", "ddim", "dpmsolver", "dpmsolver-karras")


@dataclass
class NoiseSchedule:
    num_train_timesteps: int = 400
    beta_start: float = 1e-4
    beta_end: float = 0.02
    beta_schedule: str = "linear"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "NoiseSchedule":
        return cls(**d)


def make_scheduler(sampler: str, schedule: NoiseSchedule | None = None):
    """A fresh diffusers scheduler for this schedule.

    "trailing" spacing keeps the last training timestep (pure noise) as the first sampling step, which
    matters at the few steps an interactive app uses (Lin et al. 2023).
    """
    from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler  # slow to import: when needed

    schedule = schedule or NoiseSchedule()
    common = dict(schedule.to_dict())
    if sampler == "ddpm":
        return DDPMScheduler(**common, clip_sample=True, timestep_spacing="trailing")
    if sampler == "ddim":
        return DDIMScheduler(**common, clip_sample=True, set_alpha_to_one=False, timestep_spacing="trailing")
    if sampler == "dpmsolver":
        return DPMSolverMultistepScheduler(**common, algorithm_type="dpmsolver++", solver_order=2,
                                           timestep_spacing="trailing", lower_order_final=True)
    if sampler == "dpmsolver-karras":
        # DPM-Solver++(2M) with Karras et al. (2022)'s noise levels: steps packed at low noise, where the image's
        # detail is decided. Same ODE as "dpmsolver"; measured a third of its error at half the steps
        # (benchmarks/README.md).
        return DPMSolverMultistepScheduler(**common, algorithm_type="dpmsolver++", solver_order=2,
                                           use_karras_sigmas=True, lower_order_final=True)
    raise ValueError(f"unknown sampler {sampler!r}; choose one of {SAMPLERS}")


def predicted_x0(x_t: torch.Tensor, eps: torch.Tensor, alpha_bar_t: torch.Tensor | float) -> torch.Tensor:
    """x0 = (x_t - sqrt(1 - a_bar_t) * eps) / sqrt(a_bar_t): the clean image implied by a noise prediction."""
    alpha_bar_t = torch.as_tensor(alpha_bar_t, dtype=x_t.dtype, device=x_t.device)
    return (x_t - (1 - alpha_bar_t).sqrt() * eps) / alpha_bar_t.sqrt()


# -- the forward process q(x_t | x0) ---------------------------------------------------------------------------
def alphas_cumprod(schedule: NoiseSchedule | None = None) -> torch.Tensor:
    """(T,) a_bar_t for t = 0..T-1, as diffusers' DDPMScheduler computes it for this schedule (the samplers' own)."""
    from diffusers import DDPMScheduler

    return DDPMScheduler(**(schedule or NoiseSchedule()).to_dict()).alphas_cumprod.clone()


def signal_to_noise(schedule: NoiseSchedule | None = None) -> torch.Tensor:
    """(T,) SNR(t) = a_bar_t / (1 - a_bar_t): the signal's power over the noise's in x_t."""
    a_bar = alphas_cumprod(schedule)
    return a_bar / (1 - a_bar)


def forward_noise(x0: torch.Tensor, timesteps: torch.Tensor, noise: torch.Tensor,
                  schedule: NoiseSchedule | None = None) -> torch.Tensor:
    """x_t = sqrt(a_bar_t) x0 + sqrt(1 - a_bar_t) eps for each row's t, through diffusers' DDPMScheduler.add_noise
    (what training noises with). x0, noise: (N, C, H, W); timesteps: (N,) integers in 0..T-1."""
    from diffusers import DDPMScheduler

    scheduler = DDPMScheduler(**(schedule or NoiseSchedule()).to_dict())
    return scheduler.add_noise(x0, noise, timesteps.long())
