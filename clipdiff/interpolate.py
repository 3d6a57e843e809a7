"""Walking between embeddings: spherical interpolation and weighted mixes of CLIP embeddings.

CLIP compares directions, so the path between two prompts should stay on the sphere: a straight line
(lerp) cuts through the inside, where the midpoint's direction is right but its norm shrinks, and no
training embedding ever lived there. Slerp turns the direction at a constant rate; the norm is
interpolated linearly so raw embeddings keep their usual scale.
"""
from __future__ import annotations

import torch

from .similarity import unit


def slerp(a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
    """The point a fraction t of the way from a to b along the great circle, with a linearly blended norm."""
    a, b = torch.as_tensor(a).float(), torch.as_tensor(b).float()
    ua, ub = unit(a), unit(b)
    omega = torch.arccos((ua * ub).sum(-1).clamp(-1, 1))
    if float(omega) < 1e-4:  # (almost) the same direction: lerp is exact enough and avoids 0 / 0
        direction = unit((1 - t) * ua + t * ub)
    else:
        direction = (torch.sin((1 - t) * omega) * ua + torch.sin(t * omega) * ub) / torch.sin(omega)
    norm = (1 - t) * a.norm() + t * b.norm()
    return direction * norm


def slerp_path(a: torch.Tensor, b: torch.Tensor, n: int) -> tuple[list[float], torch.Tensor]:
    """n evenly spaced points from a to b, ends included: (fractions, (n, D) embeddings)."""
    if n < 2:
        raise ValueError("an interpolation path needs at least 2 points")
    fractions = [i / (n - 1) for i in range(n)]
    return fractions, torch.stack([slerp(a, b, t) for t in fractions])


def mix(a: torch.Tensor, b: torch.Tensor, weight_b: float) -> torch.Tensor:
    """A weighted mix of two prompts' directions, (1 - weight_b) of a and weight_b of b, at a's norm."""
    a, b = torch.as_tensor(a).float(), torch.as_tensor(b).float()
    return unit((1 - weight_b) * unit(a) + weight_b * unit(b)) * a.norm()
