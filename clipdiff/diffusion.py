"""A diffusion checkpoint: the U-Net, its noise schedule, and the contract with the CLIP that conditions it.

config.json holds everything needed to use the weights correctly: the U-Net architecture, the schedule,
which CLIP (identity and embedding size) produced the training conditions, and how embeddings were
normalised before they reached the U-Net, so sampling always applies what training applied.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from .checkpoints import (CONFIG_NAME, WEIGHTS_NAME, CheckpointError, atomic_save_json, atomic_save_safetensors,
                          load_state_dict_checked, read_config, read_safetensors)
from .schedulers import NoiseSchedule
from .unet import ConditionalUNet, UNetConfig

EMBEDDING_NORMS = ("l2", "none")
COND_SOURCES = ("image", "text", "mix")
FORMAT = "clipdiff-diffusion-v1"


@dataclass
class DiffusionConfig:
    unet: UNetConfig = field(default_factory=UNetConfig)
    schedule: NoiseSchedule = field(default_factory=NoiseSchedule)
    clip_identity: str = "clipdiff-flowers"
    clip_embed_dim: int = 256
    # "l2": embeddings rescaled to norm sqrt(D) (unit RMS per element), so text (norm ~7 in ViT-B/32) and
    # image (norm ~11) embeddings meet the U-Net at one scale. "none": raw, as the reference feeds them.
    embedding_norm: str = "l2"
    # What the U-Net saw as condition during training: image embeddings (the reference), caption text
    # embeddings, or a per-sample mix of both.
    cond_source: str = "mix"
    training: dict = field(default_factory=dict)   # data and run summary, for the model card

    def __post_init__(self):
        if isinstance(self.unet, dict):
            self.unet = UNetConfig.from_dict(self.unet)
        if isinstance(self.schedule, dict):
            self.schedule = NoiseSchedule.from_dict(self.schedule)
        if self.embedding_norm not in EMBEDDING_NORMS:
            raise ValueError(f"embedding_norm must be one of {EMBEDDING_NORMS}")
        if self.cond_source not in COND_SOURCES:
            raise ValueError(f"cond_source must be one of {COND_SOURCES}")
        if self.unet.cond_dim != self.clip_embed_dim:
            raise ValueError(f"U-Net cond_dim {self.unet.cond_dim} != CLIP embedding size {self.clip_embed_dim}")

    def to_dict(self) -> dict:
        return {"format": FORMAT, **asdict(self)}

    @classmethod
    def from_dict(cls, d: dict) -> "DiffusionConfig":
        d = {k: v for k, v in d.items() if k != "format"}
        return cls(**d)


def condition(embeddings: torch.Tensor, norm: str) -> torch.Tensor:
    """CLIP embeddings (N, D) -> the U-Net's conditions, as training prepared them."""
    embeddings = embeddings.float()
    if norm == "l2":
        return embeddings / embeddings.norm(dim=-1, keepdim=True).clamp_min(1e-8) * math.sqrt(embeddings.shape[-1])
    return embeddings


def save_diffusion(model: ConditionalUNet, config: DiffusionConfig, folder: Path) -> None:
    folder = Path(folder)
    atomic_save_safetensors(model.state_dict(), folder / WEIGHTS_NAME, metadata={"format": FORMAT})
    atomic_save_json(config.to_dict(), folder / CONFIG_NAME)


def load_diffusion(folder: Path, device: torch.device | str = "cpu") -> tuple[ConditionalUNet, DiffusionConfig]:
    folder = Path(folder)
    config = read_config(folder, FORMAT, "diffusion", DiffusionConfig.from_dict)
    model = ConditionalUNet(config.unet)
    load_state_dict_checked(model, read_safetensors(folder / WEIGHTS_NAME), folder / WEIGHTS_NAME)
    return model.eval().to(device), config


def check_compatible(config: DiffusionConfig, clip_identity: str, clip_embed_dim: int, where: str = "") -> None:
    """A U-Net only understands the embedding space it was trained on."""
    if clip_embed_dim != config.clip_embed_dim:
        raise CheckpointError(
            f"the diffusion model {where} was trained on {config.clip_embed_dim}-d embeddings of "
            f"{config.clip_identity}, but the loaded CLIP {clip_identity} gives {clip_embed_dim}-d embeddings")
