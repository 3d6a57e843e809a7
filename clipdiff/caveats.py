"""When a CLIP score says little, and what to show beside it so that attendees can tell.

Our small flowers CLIP judges colour far more than shape. Measured with the shipped models (w = 2, the reference
prompts): a 1-step image, a blob of the prompt's colour that no one would call a flower, scores 49-71, as high as
12-step images (47-73); so does anything far past the trained guidance, whose saturated colours CLIP rewards. A
baseline of pure noise does not catch those (noise scores 3-26 against the flower prompts), so the settings that
make a score meaningless are named outright (`caveat`).

The noise baseline is still shown beside every score, for the other half of the story: what noise scores depends on
the prompt (for the shipped models, checkpoints/claims.json has it for the tour's prompts: `ood_elephant_noise_score`,
`rose_noise_score`), and a score is worth as much as its distance above what noise gets for the same prompt.
"""
from __future__ import annotations

import weakref

import torch

from .schedulers import sampler_spec
from .similarity import unit

MAX_TRUSTED_W = 4.0     # past this, the guided prediction extrapolates beyond anything the U-Net made in training
NOISE_SAMPLES = 8


def steps_of(steps: int, sampler: str) -> str:
    """A run's steps as the app's texts say them: '1 ddim step', '12 ddim steps'."""
    return f"{steps} {sampler} step" + ("" if steps == 1 else "s")


def caveat(steps: int, sampler: str, w: float) -> str | None:
    """Why a CLIP score of a run with these settings cannot be trusted, in words; None when nothing is known. The
    steps a sampler needs are the registry's (schedulers.REGISTRY); an unknown sampler is a ValueError."""
    needed = sampler_spec(sampler).min_steps
    if steps < needed:
        return (f"{steps_of(steps, sampler)} {'leaves' if steps == 1 else 'leave'} the image unfinished (about {needed} are needed): this CLIP scores colour, so a blob "
                "of the prompt's colour scores like a finished flower")
    if w > MAX_TRUSTED_W:
        return (f"w = {w:g} is far past the guidance the model was trained for: its colours saturate, and this "
                "CLIP rewards that")
    return None


@torch.inference_mode()
def noise_scores(encoder, conditions: torch.Tensor, size: int, n: int = NOISE_SAMPLES, seed: int = 0) -> torch.Tensor:
    """(N,): the mean CLIP score of n pictures of pure noise (what sampling starts from: N(0, 1) clipped to the image
    range, `size` pixels square, the same noise every time) against each conditioning embedding."""
    return (100 * (unit(conditions) @ noise_embeddings(encoder, size, n, seed).T).clamp_min(0)).mean(1)


# The noise pictures are the same every time, so their embeddings are made once per encoder: every run's captions
# show the baseline, and encoding the pictures again cost more than the run's own CLIP scores.
_NOISE_EMBEDDINGS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


@torch.inference_mode()
def noise_embeddings(encoder, size: int, n: int = NOISE_SAMPLES, seed: int = 0) -> torch.Tensor:
    """(n, D) unit image embeddings of noise_scores' noise pictures, made once per encoder and setting."""
    cached = _NOISE_EMBEDDINGS.setdefault(encoder, {})
    key = (int(size), int(n), int(seed))
    if key not in cached:
        noise = torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed)).clamp(-1, 1)
        cached[key] = unit(encoder.encode_image(noise))
    return cached[key]


def noise_note(baseline: float) -> str:
    """The noise baseline as a caption says it. A CLIP score is 100 * max(cosine, 0) (clipdiff.similarity), so a
    baseline of 0 means every noise picture's cosine to the prompt was negative, and under 1 that they were about
    0 or below: "noise <= 0", "noise < 1", not a bare 0 that reads like something went wrong."""
    if baseline <= 0:
        return "noise <= 0"
    return "noise < 1" if baseline < 0.5 else f"noise {baseline:.0f}"
