"""The reference prompts x 8 seeds at one w, for two models side by side: what an attendee sees, not a metric.

    python benchmarks/seed_grid.py --model before=runs/unet-shipped,runs/clip-shipped \\
        --model after=checkpoints/unet,checkpoints/clip --out benchmarks/grids/before_after.png

Each --model is LABEL=UNET_DIR,CLIP_DIR. Rows: prompts; columns: seeds 0..n-1; the default sampler and steps.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from clipdiff.images import label_font, labelled_grid  # noqa: E402
from clipdiff.pipeline import REFERENCE_PROMPTS, ClipDiffusionPipeline, images_per_prompt  # noqa: E402
from clipdiff.sampling import DEFAULT_SAMPLER, DEFAULT_STEPS, to_uint8  # noqa: E402


def model_grid(unet: str, clip: str, seeds: int, w: float, cell: int) -> Image.Image:
    pipe = ClipDiffusionPipeline.load(unet, clip, None, "cpu")
    jobs = images_per_prompt(REFERENCE_PROMPTS, w, 0, seeds)      # prompt-major: a row per prompt
    images = to_uint8(pipe.generate(jobs, DEFAULT_STEPS, DEFAULT_SAMPLER).images)
    return labelled_grid(images, rows=len(REFERENCE_PROMPTS), cols=seeds, cell=cell,
                         row_labels=[next((k for k in ("daisy", "sunflower", "rose") if k in p), p[:10]) for p in REFERENCE_PROMPTS],
                         col_labels=[f"seed {k}" for k in range(seeds)])


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", action="append", required=True, help="LABEL=UNET_DIR,CLIP_DIR (repeat)")
    p.add_argument("--seeds", type=int, default=8)
    p.add_argument("--w", type=float, default=2.0)
    p.add_argument("--cell", type=int, default=64)
    p.add_argument("--out", default="benchmarks/grids/before_after.png")
    args = p.parse_args(argv)
    panels = []
    for spec in args.model:
        label, dirs = spec.split("=", 1)
        unet, clip = dirs.split(",")
        grid = model_grid(unet, clip, args.seeds, args.w, args.cell)
        titled = Image.new("RGB", (grid.width, grid.height + 24), "white")
        titled.paste(grid, (0, 24))
        ImageDraw.Draw(titled).text((8, 4), f"{label}: w = {args.w:g}, {DEFAULT_STEPS} {DEFAULT_SAMPLER} steps",
                                    fill="black", font=label_font(14))
        panels.append(np.asarray(titled))
    height = max(p.shape[0] for p in panels)
    row = np.concatenate([np.pad(p, ((0, height - p.shape[0]), (0, 16), (0, 0)), constant_values=255)
                          for p in panels], axis=1)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(row).save(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
