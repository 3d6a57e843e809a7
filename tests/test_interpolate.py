"""clipdiff.interpolate's maths on plain tensors: slerp keeps both ends and turns at a constant rate, and mix lands
on each prompt's direction at its ends."""
from __future__ import annotations

import torch

from clipdiff.interpolate import mix, slerp, slerp_path
from clipdiff.similarity import unit


def test_slerp_keeps_the_ends_and_turns_at_a_constant_rate():
    torch.manual_seed(0)
    a, b = torch.randn(32) * 3, torch.randn(32) * 5
    fractions, path = slerp_path(a, b, 5)
    assert fractions == [0, 0.25, 0.5, 0.75, 1]
    assert torch.allclose(path[0], a, atol=1e-5) and torch.allclose(path[-1], b, atol=1e-5)
    angles = [float(torch.arccos((unit(path[i]) * unit(path[i + 1])).sum().clamp(-1, 1))) for i in range(4)]
    assert max(angles) - min(angles) < 1e-4
    assert torch.allclose(path.norm(dim=1), torch.linspace(float(a.norm()), float(b.norm()), 5), atol=1e-4)
    assert torch.allclose(slerp(a, a * 2, 0.5), a * 1.5, atol=1e-4), "same direction: no 0/0"
    assert torch.allclose(unit(mix(a, b, 1.0)), unit(b), atol=1e-6)
