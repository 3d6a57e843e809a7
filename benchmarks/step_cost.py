"""What one training step of each recipe costs on this CPU: the exchange rate behind "equal CPU minutes".

    python benchmarks/step_cost.py --json benchmarks/step_cost.json [--threads 2] [--repeats 5]

Each recipe (benchmarks/recipes.py) builds its model with the project's own training code and times
forward + backward + optimizer step on random data of its batch size, fp32 and, where the recipe asks for it,
bf16 autocast. Recipes that differ only in what costs nothing (learning rate, loss weights, augmentation,
temperature) share one measurement. The machine drifts and is shared, so the costs are measured in interleaved
rounds and each takes its fastest round: the least disturbed. The recipe campaign then gives every recipe
the number of steps that fit in the same CPU minutes, wherever it actually runs.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import open_clip
import torch
from open_clip.loss import ClipLoss

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from clipdiff.training import train_clip, train_unet  # noqa: E402
from clipdiff.diffusion import DiffusionConfig  # noqa: E402
from clipdiff.training.common import autocast  # noqa: E402
from clipdiff.unet import ConditionalUNet, UNetConfig  # noqa: E402
from recipes import CLIP_RECIPES, UNET_RECIPES, recipe_args  # noqa: E402


COST_KEYS = {"clip": ("vision_tower", "batch_size", "precision", "vision_width", "vision_layers", "resnet_width",
                      "resnet_layers", "text_width", "text_layers"),
             "unet": ("block_out_channels", "layers_per_block", "attention_levels", "batch_size", "precision")}


def cost_signature(kind: str, args) -> tuple:
    return (kind,) + tuple(str(getattr(args, k)) for k in COST_KEYS[kind])


def warmed(step):
    for _ in range(2):
        step()
    return step


def timed(step) -> float:
    start = time.perf_counter()
    step()
    return time.perf_counter() - start


def unet_step(args):
    cfg = UNetConfig(image_size=args.image_size, cond_dim=256, block_out_channels=tuple(args.block_out_channels),
                     layers_per_block=args.layers_per_block, attention_levels=tuple(map(bool, args.attention_levels)),
                     attention_head_dim=args.attention_head_dim, norm_num_groups=args.norm_num_groups)
    model = ConditionalUNet(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    snr = torch.linspace(100, 0.01, DiffusionConfig().schedule.num_train_timesteps)
    b = args.batch_size
    x, c, noise = torch.randn(b, 3, 32, 32), torch.randn(b, 256), torch.randn(b, 3, 32, 32)
    t = torch.randint(0, 400, (b,))
    dev = torch.device("cpu")

    def step():
        with autocast(dev, args.precision):
            pred = model(x, t, c)
        loss = train_unet.noise_loss(pred, noise, t, snr, args.loss_weighting, args.snr_gamma)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return warmed(step)


def clip_step(args):
    model, _ = train_clip.build_model(args)
    opt = train_clip.make_optimizer(model, args)
    loss_fn = ClipLoss()
    b = args.batch_size
    images = torch.randn(b, 3, args.image_size, args.image_size)
    texts = open_clip.tokenize(["a photo of a rose, a type of flower with large pink petals"] * b,
                               context_length=args.context_length)
    dev = torch.device("cpu")

    def step():
        with autocast(dev, args.precision):
            out = model(images, texts)
            loss = loss_fn(out["image_features"].float(), out["text_features"].float(), out["logit_scale"].float())
        opt.zero_grad()
        loss.backward()
        opt.step()
    return warmed(step)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", default="benchmarks/step_cost.json")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5, help="interleaved rounds")
    parser.add_argument("--only", default=None, help="comma-separated recipe names")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    only = set(args.only.split(",")) if args.only else None
    out = {"threads": args.threads, "torch": torch.__version__, "rounds": args.repeats,
           "cpu_bf16": "avx512_bf16" in Path("/proc/cpuinfo").read_text(), "seconds_per_step": {}}
    groups: dict[tuple, list[str]] = {}
    makers = {}
    for kind, recipes, make in (("clip", CLIP_RECIPES, clip_step), ("unet", UNET_RECIPES, unet_step)):
        for name in recipes:
            if only and name not in only:
                continue
            recipe = recipe_args(kind, name)
            key = cost_signature(kind, recipe)
            groups.setdefault(key, []).append(name)
            makers.setdefault(key, (make, recipe))
    steps = {key: make(recipe) for key, (make, recipe) in makers.items()}
    best = {key: float("inf") for key in steps}
    for r in range(args.repeats):
        for key, step in steps.items():
            best[key] = min(best[key], timed(step))
        print(f"round {r + 1}/{args.repeats}", flush=True)
    for key, names in groups.items():
        for name in names:
            out["seconds_per_step"][name] = round(best[key], 4)
            print(f"{name:<24} {best[key]:7.3f} s/step", flush=True)
    Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
