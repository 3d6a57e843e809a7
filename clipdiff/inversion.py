"""DDIM inversion: the noise that makes a photo. DDIM's deterministic update run backwards (diffusers'
DDIMInverseScheduler) walks a photo up to x_T; DDIM run forwards from that x_T with the same condition walks back
down. The round trip's error says how well "this noise makes this photo" holds: each backward step assumes the noise
prediction at the next timestep equals the one at this one, which holds only for small steps.

Guidance is off both ways (w = 0, the conditional prediction alone): classifier-free guidance amplifies each step's
error and the round trip drifts away from the photo (Mokady et al. 2022).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .schedulers import NoiseSchedule
from .unet import ConditionalUNet


@dataclass
class RoundTrip:
    noise: torch.Tensor            # (N, C, H, W) x_T found by inversion
    images: torch.Tensor           # (N, C, H, W) in [-1, 1]: DDIM from that x_T back down
    error: torch.Tensor            # (N,) mean absolute difference to the photo, in uint8 levels (0..255)


def _schedulers(schedule: NoiseSchedule | None, steps: int):
    from diffusers import DDIMInverseScheduler, DDIMScheduler  # slow to import: when needed

    # The sampler's own DDIM settings ("trailing" from T - 1) without clipping x0: a clip is not invertible.
    common = dict((schedule or NoiseSchedule()).to_dict(), timestep_spacing="trailing", set_alpha_to_one=False,
                  clip_sample=False)
    down, up = DDIMScheduler(**common), DDIMInverseScheduler(**common)
    down.set_timesteps(steps)
    up.set_timesteps(steps)
    return down, up


@torch.inference_mode()
def invert(model: ConditionalUNet, photos: torch.Tensor, cond: torch.Tensor, steps: int,
           schedule: NoiseSchedule | None = None) -> torch.Tensor:
    """photos (N, C, H, W) in [-1, 1] -> x_T, by `steps` inverse DDIM steps conditioned on cond (N, D)."""
    _, up = _schedulers(schedule, steps)
    return _walk(model, up, photos, cond)


@torch.inference_mode()
def denoise(model: ConditionalUNet, noise: torch.Tensor, cond: torch.Tensor, steps: int,
            schedule: NoiseSchedule | None = None) -> torch.Tensor:
    """x_T -> images in [-1, 1], by `steps` DDIM steps conditioned on cond, unguided (inversion's inverse)."""
    down, _ = _schedulers(schedule, steps)
    return _walk(model, down, noise, cond).clamp(-1, 1)


def _walk(model: ConditionalUNet, scheduler, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
    """x through every timestep of scheduler (DDIM down or inverse DDIM up), conditioned on cond, unguided."""
    device = next(model.parameters()).device
    x, cond = x.to(device, torch.float32), cond.to(device, torch.float32)
    for t in scheduler.timesteps:
        x = scheduler.step(model(x, t.expand(len(x)), cond), t, x).prev_sample
    return x


def round_trip(model: ConditionalUNet, photos: torch.Tensor, cond: torch.Tensor, steps: int,
               schedule: NoiseSchedule | None = None) -> RoundTrip:
    """photo -> x_T -> photo again, and how far the result is from the photo."""
    noise = invert(model, photos, cond, steps, schedule)
    images = denoise(model, noise, cond, steps, schedule)
    error = ((images - photos.to(images.device)).abs() * 127.5).mean(dim=(1, 2, 3)).cpu()
    return RoundTrip(noise.cpu(), images.cpu(), error)
