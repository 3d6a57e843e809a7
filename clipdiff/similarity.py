"""Cosine similarity in CLIP space: matrices, softmax over candidates, nearest neighbours, CLIP score.

Text-image cosines of a well-matched pair sit around 0.2-0.4, not near 1: the two towers map into
regions of the sphere apart from each other (the modality gap), so only the ranking among candidates,
sharpened by the model's learned temperature (logit scale), says which pair matches.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


def unit(x: torch.Tensor | np.ndarray) -> torch.Tensor:
    x = torch.as_tensor(x).float()
    return F.normalize(x, dim=-1)


def cosine_matrix(a, b) -> torch.Tensor:
    """(len(a), len(b)) cosine similarities."""
    return unit(a) @ unit(b).T


def softmax_over_candidates(cosines: torch.Tensor, logit_scale: float, dim: int = -1) -> torch.Tensor:
    """CLIP's probabilities: softmax(logit_scale * cosine) over the candidates along dim."""
    return (logit_scale * cosines).softmax(dim=dim)


@dataclass
class Neighbour:
    index: int
    cosine: float


def nearest(query, bank, k: int = 5) -> list[list[Neighbour]]:
    """For each query row, the k rows of bank with the highest cosine."""
    sims = cosine_matrix(torch.as_tensor(query).reshape(-1, torch.as_tensor(query).shape[-1]), bank)
    k = min(k, sims.shape[1])
    values, indices = sims.topk(k, dim=1)
    return [[Neighbour(int(i), float(v)) for v, i in zip(vs, ids)] for vs, ids in zip(values, indices)]


def clip_score(image_emb, text_emb) -> torch.Tensor:
    """Per pair: 100 * max(cosine, 0), the usual CLIP score (Hessel et al. 2021, without their w=2.5)."""
    return 100 * (unit(image_emb) * unit(text_emb)).sum(-1).clamp_min(0)
