"""The noise-prediction network: a diffusers U-Net conditioned on one CLIP embedding, plus its null embedding.

The embedding enters twice: projected into the timestep embedding (so every ResNet block is modulated by
it, FiLM-style, as the reference multiplies context into its up blocks) and as a one-token context for
cross-attention at the attention levels.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

import torch
from diffusers import UNet2DConditionModel
from torch import nn

NULL_MODES = ("learned", "zero-mask")


@dataclass
class UNetConfig:
    image_size: int = 32
    channels: int = 3
    cond_dim: int = 256
    block_out_channels: tuple[int, ...] = (32, 64, 128)
    layers_per_block: int = 1
    # One flag per resolution level: self- and cross-attention there. Attention at 16x16 costs 2-3x here.
    attention_levels: tuple[bool, ...] = (False, False, True)
    attention_head_dim: int = 32
    norm_num_groups: int = 16
    # "learned": a whole sample's condition is replaced by a learned null embedding with cond_drop_prob.
    # "zero-mask": the reference's per-element mask c * bernoulli(1 - p); the unconditional input is zeros.
    null_mode: str = "learned"
    cond_drop_prob: float = 0.1

    def __post_init__(self):
        self.block_out_channels = tuple(self.block_out_channels)
        self.attention_levels = tuple(bool(a) for a in self.attention_levels)
        if len(self.attention_levels) != len(self.block_out_channels):
            raise ValueError("attention_levels needs one flag per entry of block_out_channels")
        if self.null_mode not in NULL_MODES:
            raise ValueError(f"null_mode must be one of {NULL_MODES}, not {self.null_mode!r}")
        if not 0.0 <= self.cond_drop_prob < 1.0:
            raise ValueError("cond_drop_prob must be in [0, 1)")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "UNetConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown U-Net config keys: {sorted(unknown)}")
        return cls(**d)


class ConditionalUNet(nn.Module):
    def __init__(self, config: UNetConfig, time_cond_proj_dim: int | None = None):
        """time_cond_proj_dim: the width of a second input added to the timestep embedding (diffusers'
        `timestep_cond`); None for the teacher. The fast mode's student takes w there (clipdiff/fast.py)."""
        super().__init__()
        self.config = config
        levels = list(zip(config.block_out_channels, config.attention_levels))
        down = ["CrossAttnDownBlock2D" if attn else "DownBlock2D" for _, attn in levels]
        up = ["CrossAttnUpBlock2D" if attn else "UpBlock2D" for _, attn in reversed(levels)]
        mid_attn = config.attention_levels[-1]
        self.unet = UNet2DConditionModel(
            sample_size=config.image_size,
            in_channels=config.channels,
            out_channels=config.channels,
            down_block_types=tuple(down),
            up_block_types=tuple(up),
            mid_block_type="UNetMidBlock2DCrossAttn" if mid_attn else None,
            block_out_channels=config.block_out_channels,
            layers_per_block=config.layers_per_block,
            norm_num_groups=config.norm_num_groups,
            cross_attention_dim=config.cond_dim,
            attention_head_dim=config.attention_head_dim,
            class_embed_type="projection",
            projection_class_embeddings_input_dim=config.cond_dim,
            resnet_time_scale_shift="scale_shift",
            time_cond_proj_dim=time_cond_proj_dim,
        )
        self.null_embedding = nn.Parameter(torch.zeros(config.cond_dim))

    @property
    def cond_dim(self) -> int:
        return self.config.cond_dim

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """Predict the noise in x at timesteps t (B,) given conditions cond (B, cond_dim)."""
        return self.unet(x, t, encoder_hidden_states=cond[:, None, :], class_labels=cond).sample

    def null_condition(self, batch: int) -> torch.Tensor:
        if self.config.null_mode == "learned":
            return self.null_embedding.expand(batch, -1)
        return torch.zeros(batch, self.cond_dim, device=self.null_embedding.device, dtype=self.null_embedding.dtype)

    def drop_condition(self, cond: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Context dropout for classifier-free guidance training."""
        p = self.config.cond_drop_prob
        # The draws are made on the CPU (where the training loop's generators live), then moved.
        if self.config.null_mode == "learned":
            drop = (torch.rand(cond.shape[0], 1, generator=generator) < p).to(cond.device)
            return torch.where(drop, self.null_condition(cond.shape[0]).to(cond.dtype), cond)
        keep = torch.bernoulli(torch.full(cond.shape, 1 - p), generator=generator)
        return cond * keep.to(cond.device, cond.dtype)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
