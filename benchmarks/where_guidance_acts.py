"""Which pixels the prompt changes first, outline or colour? The check behind the tour's "where guidance acts".

    python benchmarks/where_guidance_acts.py [--seeds 4] [--steps 20] [--w 2]

The reference prompts x seeds are sampled with every step recorded (the tour's playback settings: the default
sampler, 20 steps, w = 2). At each step, each image's map of the guidance term |w (eps_c - eps_u)| (the playback's
last panel) is correlated, pixel by pixel, with two maps of the finished image:
- its edges: the gradient magnitude of its brightness (the outline);
- its colour against the background: each pixel's distance from the mean colour of the image's top and bottom
  rows (where the flower's colour is).
The table gives both correlations per step, averaged over the images: which one the guidance follows, and when.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from clipdiff.pipeline import REFERENCE_PROMPTS, ClipDiffusionPipeline, images_per_prompt  # noqa: E402


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel() - a.mean(), b.ravel() - b.mean()
    return float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum()))


def finished_maps(final: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, H, W, 3) uint8 finished images -> (edges, colour against the background), each (N, H, W)."""
    final = final.astype(np.float32)
    brightness = final.mean(-1)
    edges = np.stack([np.hypot(*np.gradient(b)) for b in brightness])
    border = np.concatenate([final[:, :2], final[:, -2:]], axis=1).reshape(len(final), -1, 3).mean(1)
    return edges, np.linalg.norm(final - border[:, None, None], axis=-1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--w", type=float, default=2.0)
    args = parser.parse_args()
    pipe = ClipDiffusionPipeline.load()
    jobs = images_per_prompt(list(REFERENCE_PROMPTS), args.w, 0, args.seeds)
    records = pipe.generate(jobs, steps=args.steps, record_every=1).records
    edges, colour = finished_maps(records[-1].x0)
    print(f"{len(jobs)} images, w = {args.w:g}, {args.steps} steps: correlation of the guidance map with the "
          "finished image's")
    print("step | edges (outline) | colour against the background")
    for r in records:
        g = r.guidance.astype(np.float32)
        by_edges = np.mean([correlation(g[i], edges[i]) for i in range(len(g))])
        by_colour = np.mean([correlation(g[i], colour[i]) for i in range(len(g))])
        print(f"{r.step + 1:4d} | {by_edges:15.2f} | {by_colour:.2f}")


if __name__ == "__main__":
    main()
