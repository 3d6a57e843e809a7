"""python -m clipdiff sample: prompts x guidance weights -> one PNG each (parameters inside), grid.png, manifest.json.

    python -m clipdiff sample --prompt "A deep red rose flower" --w 0 --w 2 --steps 12 --sampler dpmsolver-karras \\
        --seed 0 --out outputs/roses
    python -m clipdiff sample --prompt "A rose" --negative "red" --w 2      # guidance pushes away from "red"
    python -m clipdiff sample --prompt "[a white daisy:a sunflower:0.5]"   # a daisy for half the steps, then...
    python -m clipdiff sample --sampler fast --steps 4 --w 2   # the fast mode's student (checkpoints/fast, opt-in)
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..checkpoints import DEFAULT_FAST_DIR, DEFAULT_UNET_DIR, CheckpointError
from ..images import labelled_grid, save_png, to_pil
from ..pipeline import REFERENCE_PROMPTS, REFERENCE_WS, ClipDiffusionPipeline, sweep
from ..prompts import PromptSyntaxError
from ..runtimes import DEFAULT_RUNTIME, PRECISIONS, RUNTIMES, RuntimeUnavailable
from ..sampling import SEED_RANGE, STEPS_RANGE, W_RANGE, Sampling, default_steps, run_to_end, to_uint8
from ..schedulers import REGISTRY, sampler_spec


def main(argv=None):
    parser = argparse.ArgumentParser(prog="clipdiff sample", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    default = Sampling()
    parser.add_argument("--prompt", action="append", help="repeat for several prompts (default: the reference three); "
                                                          "[from:to:when] switches prompts part way")
    parser.add_argument("--negative", default="", help="a negative prompt: guidance pushes away from it instead of "
                                                       "from the learned null (default: none)")
    parser.add_argument("--w", action="append", type=float, help=f"guidance weight, {W_RANGE[0]:g} to {W_RANGE[1]:g}; "
                                                                 "repeat for several (default: the reference list)")
    parser.add_argument("--steps", type=int, default=None,
                        help=f"sampler steps, {STEPS_RANGE[0]} to {STEPS_RANGE[1]} (default {default.steps}; "
                             f"the fast sampler: {default_steps('fast')}, at most {sampler_spec('fast').max_steps})")
    parser.add_argument("--sampler", choices=list(REGISTRY), default=default.sampler,
                        help=f"(default {default.sampler}; fast: the distilled student of --fast, 1-8 steps, without "
                             "negative prompts or prompt switches)")
    parser.add_argument("--fast", default=str(DEFAULT_FAST_DIR), help="the fast mode's student folder (read only "
                                                                      "with --sampler fast)")
    parser.add_argument("--seed", type=int, default=default.seed,
                        help=f"{SEED_RANGE[0]} to {SEED_RANGE[1]} (default {default.seed})")
    parser.add_argument("--out", default="outputs/sample")
    parser.add_argument("--unet", default=str(DEFAULT_UNET_DIR), help="diffusion checkpoint folder")
    parser.add_argument("--clip", default="default")
    parser.add_argument("--clip-pretrained", default=None)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--runtime", choices=RUNTIMES, default=None,
                        help=f"where the U-Net runs (default: {DEFAULT_RUNTIME} on the CPU, torch on a GPU)")
    parser.add_argument("--precision", choices=PRECISIONS, default="fp32",
                        help="bf16: faster on CPUs with AVX-512 BF16 or AMX, other pictures (recorded in each PNG)")
    args = parser.parse_args(argv)
    if args.steps is None:
        args.steps = default_steps(args.sampler)
    fast = sampler_spec(args.sampler).student
    prompts = args.prompt or list(REFERENCE_PROMPTS)
    ws = args.w or list(REFERENCE_WS)
    if any(not p.strip() for p in prompts):
        parser.error("prompts must not be empty")
    runs = [Sampling(w, args.steps, args.sampler, args.seed) for w in ws]   # the bounds the app holds to
    problems = sorted({p for s in runs for p in s.problems()})
    if problems:
        parser.error("; ".join(problems))

    try:
        pipe = ClipDiffusionPipeline.load(args.unet, args.clip, args.clip_pretrained, args.device, args.runtime,
                                          args.precision, fast=args.fast if fast else None)
    except (RuntimeUnavailable, CheckpointError) as e:
        parser.error(str(e))
    if fast and not args.w:      # the reference list's w that the student learned (it refuses the others)
        low, high = pipe.student_config.w_range
        ws = [w for w in ws if low <= w <= high]
    try:
        run = pipe.prepare(sweep(prompts, ws, args.seed, args.negative), args.steps, args.sampler)
    except PromptSyntaxError as e:
        parser.error(f"{e.prompt!r}: {e}")
    refused = pipe.fast_problems(run)
    if refused:
        parser.error(" ".join(refused))
    frames = to_uint8(run_to_end(pipe.sample(run)).images)
    columns = [k % len(prompts) for k in range(len(run.jobs))]     # sweep's order: rows are w, columns prompts
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    manifest = []
    for k, (job, frame, column) in enumerate(zip(run.jobs, frames, columns)):
        params = pipe.parameters_of(job, args.steps, args.sampler)
        name = f"{k:03d}_w{job.w:+g}_p{column}_s{job.seed}.png"
        save_png(to_pil(frame), out / name, params)
        manifest.append({"file": name, **params})
    grid = labelled_grid(frames, rows=len(ws), cols=len(prompts), row_labels=[f"w = {w:g}" for w in ws],
                         col_labels=prompts)
    grid.save(out / "grid.png")
    model = pipe.student_id if fast else pipe.model_id
    (out / "manifest.json").write_text(json.dumps({"model": model, "images": manifest}, indent=2) + "\n")
    print(f"{len(run.jobs)} images, grid.png and manifest.json in {out}")


if __name__ == "__main__":
    main()
