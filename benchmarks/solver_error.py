"""python benchmarks/solver_error.py: how far each sampler lands from the exact solution, at each step count.

    python benchmarks/solver_error.py                                   # the shipped U-Net, every sampler
    python benchmarks/solver_error.py --unet DIR --steps 6 8 10 12 --sampler dpmsolver dpmsolver-karras

The deterministic samplers solve the same probability-flow ODE; with many steps they converge to one image per
seed. This prints, for each sampler and step count, the RMS pixel distance (images in [-1, 1]) of its final
images to a many-step DPM-Solver++ solution from the same noise, plus the seconds per image. Prompts: the
reference three, at w = 0 and w = 2, four seeds each. DDPM is stochastic and DDIM clips x0, so neither
converges to the same image: their figures say how different, not how wrong. Image quality against real images
is `python -m clipdiff eval-gen --sampler S --steps N`.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from clipdiff.checkpoints import DEFAULT_UNET_DIR  # noqa: E402
from clipdiff.pipeline import REFERENCE_PROMPTS, ClipDiffusionPipeline, Job  # noqa: E402
from clipdiff.schedulers import SAMPLERS  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--unet", default=str(DEFAULT_UNET_DIR))
    parser.add_argument("--clip", default="default")
    parser.add_argument("--sampler", nargs="+", default=list(SAMPLERS), choices=SAMPLERS)
    parser.add_argument("--steps", nargs="+", type=int, default=[6, 8, 10, 12, 15, 20])
    parser.add_argument("--exact-steps", type=int, default=200, help="DPM-Solver++ steps of the 'exact' solution")
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    pipe = ClipDiffusionPipeline.load(args.unet, args.clip, device="cpu")
    jobs = [Job(p, w, seed) for p in REFERENCE_PROMPTS for w in (0.0, 2.0) for seed in range(args.seeds)]
    exact = pipe.generate(jobs, steps=args.exact_steps, sampler="dpmsolver").images
    print(f"{len(jobs)} images; distance to {args.exact_steps}-step DPM-Solver++ (RMS, pixels in [-1, 1])")
    print(f"{'sampler':>18} {'steps':>5} {'all':>7} {'w=0':>7} {'w=2':>7} {'s/image':>8}")
    at_w = {w: torch.tensor([j.w == w for j in jobs]) for w in (0.0, 2.0)}
    for sampler in args.sampler:
        for steps in args.steps:
            start = time.perf_counter()
            images = pipe.generate(jobs, steps=steps, sampler=sampler).images
            seconds = (time.perf_counter() - start) / len(jobs)
            rms = (images - exact).pow(2).mean(dim=(1, 2, 3)).sqrt()
            print(f"{sampler:>18} {steps:>5} {rms.mean():7.4f} {rms[at_w[0.0]].mean():7.4f} "
                  f"{rms[at_w[2.0]].mean():7.4f} {seconds:8.3f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
