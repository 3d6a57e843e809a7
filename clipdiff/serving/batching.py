"""Batching across requests: every request's step asks the U-Net one question, (x_in, t, cond); the questions that
arrive together are answered by one forward. Timesteps are per sample, so requests at different steps, samplers or
step counts share a forward as well as requests in lockstep.

Why this is safe for the pictures: each sample's prediction depends only on its own row of the inputs (the U-Net
has no batch-wise layers: group norm and attention work within a sample). The only change a batch mate can make is
which CPU kernels run, which moves the last float bits (tests/test_serving.py says how far).
"""
from __future__ import annotations

import torch

from ..unet import ConditionalUNet

ModelInput = tuple[torch.Tensor, torch.Tensor, torch.Tensor]   # x_in (B, C, H, W), t (B,), cond (B, D)


def predict_batch(model: ConditionalUNet, inputs: list[ModelInput]) -> list[torch.Tensor]:
    """Noise predictions for several requests' inputs in one forward, split back in order."""
    sizes = [x.shape[0] for x, _, _ in inputs]
    with torch.inference_mode():
        x = torch.cat([x for x, _, _ in inputs])
        t = torch.cat([t.reshape(-1) for _, t, _ in inputs])
        cond = torch.cat([c for _, _, c in inputs])
        return list(model(x, t, cond).split(sizes))


def forward_size(inputs: list[ModelInput]) -> int:
    return sum(x.shape[0] for x, _, _ in inputs)
