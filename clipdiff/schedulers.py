"""The noise schedule (the reference's: T=400, linear betas 1e-4..0.02) and the samplers, from diffusers.

`REGISTRY` is the one place that says what a sampler is: its name, the diffusers scheduler it makes, how the app
describes it, the fewest steps that leave a finished image, and whether it draws fresh noise each step. The app's
controls, the CLIP-score caveats, the tour and the guided sampler read it, so a new sampler is one entry here; what
a scheduler needs at run time it says itself (`scale_model_input`, its step's keyword arguments: `step_options`).
"""
from __future__ import annotations

import inspect
from dataclasses import asdict, dataclass
from typing import Callable

import torch

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


# diffusers is slow to import: each factory imports it when a scheduler is made. "trailing" spacing keeps the last
# training timestep (pure noise) as the first sampling step, which matters at the few steps an interactive app
# uses (Lin et al. 2023).
def _ddpm(common: dict):
    from diffusers import DDPMScheduler
    return DDPMScheduler(**common, clip_sample=True, timestep_spacing="trailing")


def _ddim(common: dict):
    from diffusers import DDIMScheduler
    return DDIMScheduler(**common, clip_sample=True, set_alpha_to_one=False, timestep_spacing="trailing")


def _dpmsolver(common: dict):
    from diffusers import DPMSolverMultistepScheduler
    return DPMSolverMultistepScheduler(**common, algorithm_type="dpmsolver++", solver_order=2,
                                       timestep_spacing="trailing", lower_order_final=True)


def _dpmsolver_karras(common: dict):
    # DPM-Solver++(2M) with Karras et al. (2022)'s noise levels: steps packed at low noise, where the image's detail
    # is decided. Same ODE as "dpmsolver"; measured a third of its error at half the steps (benchmarks/README.md).
    from diffusers import DPMSolverMultistepScheduler
    return DPMSolverMultistepScheduler(**common, algorithm_type="dpmsolver++", solver_order=2,
                                       use_karras_sigmas=True, lower_order_final=True)


@dataclass(frozen=True)
class SamplerSpec:
    """What a sampler is."""
    name: str                          # as the controls, the CLI and a PNG's parameters name it
    title: str                         # as prose names it ("DPM-Solver++, Karras steps")
    description: str                   # what the sampler control says about it
    min_steps: int                     # fewer leave a visibly unfinished image (benchmarks/README.md, "Choosing
                                       # the sampler": solver error against a 200-step solution)
    stochastic: bool                   # draws fresh noise every step (so it needs far more steps to lose it)
    make: Callable[[dict], object]     # the schedule's settings -> a fresh diffusers scheduler


REGISTRY: dict[str, SamplerSpec] = {spec.name: spec for spec in (
    SamplerSpec("ddpm", "DDPM", "the reference's stochastic sampler, wants hundreds of steps", 50, True, _ddpm),
    SamplerSpec("ddim", "DDIM", "deterministic", 10, False, _ddim),
    SamplerSpec("dpmsolver", "DPM-Solver++, even steps", "DPM-Solver++ (2nd order), evenly spaced steps", 8, False,
                _dpmsolver),
    SamplerSpec("dpmsolver-karras", "DPM-Solver++, Karras steps", "the same, steps packed at low noise", 6, False,
                _dpmsolver_karras),
)}
SAMPLERS = tuple(REGISTRY)
DEFAULT_SAMPLER = "dpmsolver-karras"     # why: sampling.py, beside DEFAULT_STEPS


def sampler_spec(sampler: str) -> SamplerSpec:
    """The registry's entry for this name; a ValueError that lists the names for any other."""
    try:
        return REGISTRY[sampler]
    except (KeyError, TypeError):
        raise ValueError(f"unknown sampler {sampler!r}; choose one of {', '.join(SAMPLERS)}") from None


def make_scheduler(sampler: str, schedule: NoiseSchedule | None = None):
    """A fresh diffusers scheduler of this sampler for this schedule."""
    return sampler_spec(sampler).make(dict((schedule or NoiseSchedule()).to_dict()))


def step_options(scheduler, **offered) -> dict:
    """The offered keyword arguments that this scheduler's `step` takes (by its signature), e.g. DDPM's generators:
    a scheduler says what it needs, so the sampler loop names no sampler."""
    accepted = inspect.signature(scheduler.step).parameters
    return {name: value for name, value in offered.items() if name in accepted}


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
