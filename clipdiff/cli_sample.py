"""python -m clipdiff sample: prompts x guidance weights -> one PNG each (parameters inside), grid.png, manifest.json.

    python -m clipdiff sample --prompt "A deep red rose flower" --w 0 --w 2 --steps 12 --sampler dpmsolver-karras \\
        --seed 0 --out outputs/roses
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from .checkpoints import DEFAULT_UNET_DIR
from .images import labelled_grid, save_png, to_pil
from .pipeline import (DEFAULT_SAMPLER, DEFAULT_STEPS, REFERENCE_PROMPTS, REFERENCE_WS, ClipDiffusionPipeline,
                       sweep)
from .sampling import to_uint8
from .schedulers import SAMPLERS


def main(argv=None):
    parser = argparse.ArgumentParser(prog="clipdiff sample", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompt", action="append", help="repeat for several prompts (default: the reference three)")
    parser.add_argument("--w", action="append", type=float, help="guidance weight; repeat for several "
                                                                 "(default: the reference list)")
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS)
    parser.add_argument("--sampler", choices=SAMPLERS, default=DEFAULT_SAMPLER)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="outputs/sample")
    parser.add_argument("--unet", default=str(DEFAULT_UNET_DIR), help="diffusion checkpoint folder")
    parser.add_argument("--clip", default="default")
    parser.add_argument("--clip-pretrained", default=None)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)
    prompts = args.prompt or list(REFERENCE_PROMPTS)
    ws = args.w or list(REFERENCE_WS)
    if any(not p.strip() for p in prompts):
        parser.error("prompts must not be empty")
    if not 1 <= args.steps <= 1000:
        parser.error("--steps must be between 1 and 1000")

    pipe = ClipDiffusionPipeline.load(args.unet, args.clip, args.clip_pretrained, args.device)
    jobs = sweep(prompts, ws, args.seed)
    result = pipe.generate(jobs, steps=args.steps, sampler=args.sampler)
    frames = to_uint8(result.images)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    manifest = []
    for k, (job, frame) in enumerate(zip(jobs, frames)):
        params = pipe.parameters_of(job, args.steps, args.sampler)
        name = f"{k:03d}_w{job.w:+g}_p{prompts.index(job.prompt)}_s{job.seed}.png"
        save_png(to_pil(frame), out / name, params)
        manifest.append({"file": name, **params})
    grid = labelled_grid(frames, rows=len(ws), cols=len(prompts), row_labels=[f"w = {w:g}" for w in ws],
                         col_labels=prompts)
    grid.save(out / "grid.png")
    (out / "manifest.json").write_text(json.dumps({"model": pipe.model_id, "images": manifest}, indent=2) + "\n")
    print(f"{len(jobs)} images, grid.png and manifest.json in {out}")


if __name__ == "__main__":
    main()
