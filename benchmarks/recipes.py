"""The recipes compared at equal CPU minutes (issue 12): each is the training script's defaults plus overrides.

A recipe's CPU cost per step is measured by benchmarks/step_cost.py on a 2-core machine; the campaign
(benchmarks/campaign.py) gives each recipe the steps that fit in BUDGET_CPU_MINUTES of that machine, so the
comparison is "what 25 minutes of this laptop buys", wherever the runs actually execute.
"""
from __future__ import annotations

import argparse

from clipdiff.training import train_clip, train_unet
from clipdiff.training.common import add_defaults_to_parser

BUDGET_CPU_MINUTES = 25

CLIP_RECIPES: dict[str, dict] = {
    "clip-vit": dict(vision_tower="vit"),                               # the shipped recipe
    "clip-resnet": dict(vision_tower="resnet"),
    "clip-resnet-lr5e-4": dict(vision_tower="resnet", lr=5e-4),
    "clip-resnet-b128": dict(vision_tower="resnet", batch_size=128),
    "clip-resnet-nocrop": dict(vision_tower="resnet", crop_scale_min=1.0),
    "clip-resnet-t0.03": dict(vision_tower="resnet", temperature=0.03),
    "clip-resnet-bf16": dict(vision_tower="resnet", precision="bf16"),
}

_SNR = dict(loss_weighting="min-snr", snr_gamma=5.0)
UNET_RECIPES: dict[str, dict] = {
    "unet-mse": dict(loss_weighting="mse"),                             # the shipped recipe
    "unet-minsnr": dict(_SNR),
    "unet-minsnr-lr3e-4": dict(_SNR, lr=3e-4),
    "unet-minsnr-b128": dict(_SNR, batch_size=128),
    "unet-minsnr-noflip": dict(_SNR, flip_prob=0.0),
    "unet-minsnr-wide": dict(_SNR, block_out_channels=[48, 96, 192], norm_num_groups=16),
    "unet-minsnr-2layers": dict(_SNR, layers_per_block=2),
    "unet-minsnr-attn16": dict(_SNR, attention_levels=[0, 1, 1]),
    "unet-minsnr-bf16": dict(_SNR, precision="bf16"),
}


def recipe_overrides(kind: str, name: str) -> dict:
    return (CLIP_RECIPES if kind == "clip" else UNET_RECIPES)[name]


def recipe_args(kind: str, name: str, **extra) -> argparse.Namespace:
    """The training script's parsed defaults with the recipe's overrides (and extra ones) applied."""
    defaults = train_clip.clip_defaults() if kind == "clip" else train_unet.unet_defaults()
    parser = argparse.ArgumentParser()
    add_defaults_to_parser(parser, defaults)
    args = parser.parse_args([])
    for key, value in {**recipe_overrides(kind, name), **extra}.items():
        if not hasattr(args, key):
            raise KeyError(f"recipe {name} sets unknown option {key}")
        setattr(args, key, value)
    return args


def recipe_flags(kind: str, name: str, **extra) -> list[str]:
    """The same recipe as command-line flags of train-clip / train-unet."""
    flags = []
    for key, value in {**recipe_overrides(kind, name), **extra}.items():
        flags.append("--" + key.replace("_", "-"))
        flags += [str(v) for v in value] if isinstance(value, (list, tuple)) else [str(value)]
    return flags


def budget_steps(seconds_per_step: float, minutes: float = BUDGET_CPU_MINUTES) -> int:
    return max(int(minutes * 60 / seconds_per_step), 1)
