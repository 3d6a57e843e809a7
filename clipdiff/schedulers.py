"""The noise schedule (the reference's: T=400, linear betas 1e-4..0.02) and the samplers, from diffusers.

`REGISTRY` is the one place that says what a sampler is: its name, the diffusers scheduler it makes, how the app
describes it, the fewest steps that leave a finished image, whether it draws fresh noise each step, and which model
it runs: the teacher U-Net (guided, two predictions a step) or the fast mode's distilled student (clipdiff/fast.py:
w is its input, one prediction a step). `SAMPLERS` are the teacher's, which every loaded model can run. The app's
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


# The fast mode's grid (Luo et al. 2023, "Latent Consistency Models"): the student is distilled on every
# (T // LCM_ORIGINAL_STEPS)-th training timestep, 7, 15, ..., 399 for T = 400, and LCMScheduler samples on the same grid.
# timestep_scaling sets the boundary condition's c_skip / c_out (c_skip = 1 only at t = 0); both are the student's
# training flags, recorded in its config, which passes them back here when it samples.
LCM_ORIGINAL_STEPS = 50
LCM_TIMESTEP_SCALING = 10.0


def _lcm(common: dict):
    # clip_sample: x0 kept in the image range, as the teacher's DDIM keeps it. Fresh noise between steps is drawn
    # from each sample's own generator (multistep consistency sampling), so a seed makes the same image in any batch.
    from diffusers import LCMScheduler
    return LCMScheduler(**{"original_inference_steps": LCM_ORIGINAL_STEPS, "timestep_scaling": LCM_TIMESTEP_SCALING,
                           **common}, clip_sample=True)


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
    student: bool = False              # runs the fast mode's distilled student (w an input), not the teacher
    max_steps: int | None = None       # more steps than this are refused (None: the schedule's T)
    default_steps: int | None = None   # what the CLI and the app use when no steps are given (None: DEFAULT_STEPS)


REGISTRY: dict[str, SamplerSpec] = {spec.name: spec for spec in (
    SamplerSpec("ddpm", "DDPM", "the reference's stochastic sampler, wants hundreds of steps", 50, True, _ddpm),
    SamplerSpec("ddim", "DDIM", "deterministic", 10, False, _ddim),
    SamplerSpec("dpmsolver", "DPM-Solver++, even steps", "DPM-Solver++ (2nd order), evenly spaced steps", 8, False,
                _dpmsolver),
    SamplerSpec("dpmsolver-karras", "DPM-Solver++, Karras steps", "the same, steps packed at low noise", 6, False,
                _dpmsolver_karras),
    # Not a sampler of the teacher: the student it names was distilled from the teacher's guided predictions
    # (clipdiff/fast.py), so negative prompts, prompt switches, photo edits and playback, which need the conditional
    # and unconditional predictions apart, are the teacher's alone. 8 steps at most: past that it gains nothing
    # (consistency models take 1-8).
    SamplerSpec("fast", "fast mode (distilled student)", "opt-in: a student distilled from the U-Net with w as an "
                "input, one forward a step (LCM sampling), 1-8 steps; the teacher's features need another sampler",
                2, True, _lcm, student=True, max_steps=8, default_steps=4),
)}
SAMPLERS = tuple(name for name, spec in REGISTRY.items() if not spec.student)     # the teacher's
STUDENT_SAMPLERS = tuple(name for name, spec in REGISTRY.items() if spec.student)
DEFAULT_SAMPLER = "dpmsolver-karras"     # why: sampling.py, beside DEFAULT_STEPS


def sampler_spec(sampler: str) -> SamplerSpec:
    """The registry's entry for this name; a ValueError that lists the names for any other."""
    try:
        return REGISTRY[sampler]
    except (KeyError, TypeError):
        raise ValueError(f"unknown sampler {sampler!r}; choose one of {', '.join(REGISTRY)}") from None


def make_scheduler(sampler: str, schedule: NoiseSchedule | None = None, **settings):
    """A fresh diffusers scheduler of this sampler for this schedule; settings: what the model adds (the fast mode's
    student, the grid it was distilled on)."""
    return sampler_spec(sampler).make({**(schedule or NoiseSchedule()).to_dict(), **settings})


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
