"""python -m clipdiff eval-clip / eval-gen: how good the CLIP is, and how good its diffusion model's images are.

    python -m clipdiff eval-clip --json outputs/eval-clip.json
    python -m clipdiff eval-gen --prompts prompts.txt --w 0 --w 1 --w 2 --n 16 --json outputs/eval-gen.json
    python -m clipdiff eval-gen --unet runs/unet-a --unet runs/unet-b --json outputs/compare.json
    python -m clipdiff eval-gen --species 8 --fast      # + the fast mode's rows (4 and 2 steps) beside the teacher's

eval-gen's Frechet distance (FD_CLIP), CMMD and KID use the project's CLIP image embeddings, not FID's Inception-v3
features (those weights cannot be downloaded here): FD_CLIP is not comparable with published FID numbers.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
import torch

from .. import data as data_mod
from ..checkpoints import DEFAULT_FAST_DIR, DEFAULT_UNET_DIR, CheckpointError
from ..diffusion import load_diffusion
from ..encoders import ClipEncoder
from ..sampling import DEFAULT_W, from_uint8
from ..evaluate import FID_NOTE, MAX_REAL, RealReference, best_w, clip_report, guidance_curve, w_response
from ..pipeline import (DEFAULT_SAMPLER, DEFAULT_STEPS, REFERENCE_PROMPTS, REFERENCE_WS, ClipDiffusionPipeline,
                       model_id_of)
from ..schedulers import SAMPLERS, STUDENT_SAMPLERS


def _write_json(report: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_finite_or_none(report), indent=2) + "\n")


def _finite_or_none(x):
    """NaN and infinities are not JSON: they become null."""
    if isinstance(x, dict):
        return {k: _finite_or_none(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_finite_or_none(v) for v in x]
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


# -- eval-clip -----------------------------------------------------------------------------------------------
def main_clip(argv=None):
    parser = argparse.ArgumentParser(
        prog="clipdiff eval-clip", description="Caption->image recall@1/5/10 and zero-shot species top-1/5 of a "
        "CLIP on the images train-clip holds out (a seeded sample of Oxford-102's official test split).")
    parser.add_argument("--clip", default="default", help="'default', a local-dir folder, or an open_clip name")
    parser.add_argument("--clip-pretrained", default=None, help="pretrained tag or weights file for --clip NAME")
    parser.add_argument("--data", default=None, help="shared data folder, captions.jsonl or image folder tree "
                                                     "(default: ../shared/data)")
    parser.add_argument("--json", default=None, help="write the figures here as JSON")
    parser.add_argument("--n-heldout", type=int, default=1000, help="as train-clip's --n-heldout")
    parser.add_argument("--seed", type=int, default=0, help="as train-clip's --seed: picks the held-out images")
    parser.add_argument("--image-size", type=int, default=64, help="size images are loaded at, as train-clip's "
                                                                   "(the CLIP resizes them to its own input)")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)

    encoder = ClipEncoder.load(args.clip, args.clip_pretrained, args.device)
    report = clip_report(encoder, args.data, args.n_heldout, args.seed, args.image_size)
    split = report["split"]
    r, z, c = report["caption_to_image"], report["zero_shot"], report["counts"]
    print(f"eval-clip: {encoder.identity}\n  split: {split}")
    print(f"  {'caption -> image (' + str(c['gallery']) + ' images)':<34}"
          + "  ".join(f"{k} {100 * v:5.1f}%" for k, v in r.items()))
    print(f"  {'zero-shot (' + str(c['candidate_species']) + ' species)':<34}"
          + "  ".join(f"{k} {100 * v:5.1f}%" for k, v in z.items()))
    if args.json:
        _write_json(report, Path(args.json))
        print(f"wrote {args.json}")
    return 0


# -- eval-gen ------------------------------------------------------------------------------------------------
def read_prompts(path: str | Path) -> list[str]:
    """One prompt per line; blank lines and lines starting with # are skipped."""
    lines = (line.strip() for line in Path(path).read_text().splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def real_embeddings(spec: str, encoder: ClipEncoder, image_size: int, max_real: int = MAX_REAL,
                    seed: int = 0) -> tuple[np.ndarray | None, str]:
    """(M, D) raw CLIP image embeddings of real images, and where they came from; (None, why) if there are none."""
    if spec == "none":
        return None, "none (--real none)"
    if spec == "atlas":
        try:
            from ..atlas import Atlas

            atlas = Atlas.load()
        except Exception as e:  # not written yet, not built, or unreadable: all mean "no atlas"
            return None, (f"the embedding atlas is not available ({type(e).__name__}: {e}); "
                          "pass --real FOLDER (a folder of real images) to get FD_CLIP and CMMD")
        trained_with = getattr(atlas, "clip_identity", None)
        if trained_with and trained_with != encoder.identity:
            return None, (f"the atlas holds embeddings of {trained_with}, not of {encoder.identity}; "
                          "pass --real FOLDER instead")
        return np.asarray(atlas.image_emb, dtype=np.float32), (
            "atlas (checkpoints/atlas: the training images embedded at their stored size, not at the U-Net's; "
            "--real FOLDER compares like for like)")
    # Real images go through the generated images' path: loaded at the U-Net's resolution, then the CLIP's
    # own resize; otherwise the distances would partly measure the resolution gap.
    ds = data_mod.load_any(spec, image_size)
    keep = np.arange(len(ds))
    if len(ds) > max_real:
        keep = np.sort(np.random.default_rng(seed).choice(len(ds), size=max_real, replace=False))
    pixels = from_uint8(ds.images[keep])
    return encoder.encode_image(pixels).numpy(), (f"folder {spec} ({len(keep)} of {len(ds)} images, "
                                                  f"at {image_size}x{image_size} like the generated ones)")


def _fmt(v, spec: str) -> str:
    return "n/a" if v is None or (isinstance(v, float) and not math.isfinite(v)) else format(v, spec)


def print_table(model: str, results: list[dict]) -> None:
    print(f"\n{model}\n  {'w':>6}  {'CLIP score':>10}  {'FD_CLIP':>9}  {'CMMD':>8}  {'KID':>8}  {'diversity':>9}")
    for r in results:
        print(f"  {r['w']:>6g}  {_fmt(r['clip_score'], '10.2f')}  {_fmt(r['frechet_distance'], '9.4f'):>9}  "
              f"{_fmt(r['cmmd'], '8.3f'):>8}  {_fmt(r.get('kid'), '8.3f'):>8}  {_fmt(r['diversity'], '9.4f'):>9}")
    lowest = best_w(results, "cmmd")
    if lowest is not None:
        print(f"  lowest CMMD at w = {lowest:g}, lowest FD_CLIP at w = {best_w(results, 'frechet_distance'):g}")


def plot_curves(runs: list[dict], png: Path) -> None:
    """CLIP score, diversity, FD_CLIP and CMMD against w, one line per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = (("clip_score", "CLIP score (higher: follows the prompt)"),
              ("diversity", "diversity (mean 1 - cosine within a prompt)"),
              ("frechet_distance", "FD_CLIP to real (lower is better)"),
              ("cmmd", "CMMD x1000 to real (lower is better)"))
    fig, axes = plt.subplots(2, 2, figsize=(10, 7))
    for ax, (key, title) in zip(axes.flat, panels):
        for run in runs:
            pts = [(r["w"], r[key]) for r in run["results"] if r[key] is not None and math.isfinite(r[key])]
            if pts:
                ax.plot(*zip(*pts), marker="o", label=run["model"])
        if not ax.lines:
            ax.text(0.5, 0.5, "no real images given", ha="center", va="center", transform=ax.transAxes)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("guidance weight w")
        ax.grid(alpha=0.3)
    axes.flat[0].legend(fontsize=8)
    fig.suptitle("Guidance sweep, in the CLIP's image-embedding space (not Inception: FD_CLIP is not FID)",
                 fontsize=10)
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=100)
    plt.close(fig)


SPECIES_METRICS = {
    "fd": "Frechet distance, species classifier features, all species-prompt images vs a species-balanced real sample",
    "kid": "KID x1000 (cubic kernel, unbiased) per species prompt against that species' real images, averaged",
    "accuracy": "share of species-prompt images the classifier assigns to the prompt's species (top5: among 5)",
}


def species_judge(args, image_size: int):
    from ..training.yardstick import SpeciesJudge, ensure

    yardstick = ensure(args.yardstick, args.data, args.device)
    ds = data_mod.load_training_data(args.data, 64)
    _, held = data_mod.heldout_split(ds.splits, 1000, 0)
    return SpeciesJudge(yardstick, ds, held, image_size)


def print_species_table(runs: list[dict], reference: dict, judge) -> None:
    print(f"\nspecies prompts ({len(judge.species)} species), measured by our own species classifier "
          f"(held-out top-1 {judge.yardstick.info.get('heldout_accuracy', float('nan')):.3f})")
    print(f"  {'images':<34} {'w':>5}  {'FD':>8}  {'KID x1000':>9}  {'species acc':>11}  {'top-5':>6}")
    rows = [(name, None, r) for name, r in (("real held-out (floor)", reference["real"]),
                                            (f"blurred real (sigma {reference['blur_sigma_px']} px)",
                                             reference["blurred"]))]
    rows += [(run["model"], s["w"], s) for run in runs for s in run.get("species", [])]
    for name, w, r in rows:
        print(f"  {name[:34]:<34} {'' if w is None else format(w, 'g'):>5}  {_fmt(r['fd'], '8.2f')}  "
              f"{_fmt(r['kid'], '9.2f')}  {_fmt(r['accuracy'], '11.3f')}  {_fmt(r['top5'], '6.3f')}")


def fast_vs_teacher(runs: list[dict]) -> list[dict]:
    """Each fast-mode species row against the first run's (the teacher's) at the same w: FD ratio and accuracy."""
    teacher = {s["w"]: s for s in runs[0].get("species", [])}
    found = []
    for run in runs:
        for s in (run.get("species", []) if run["sampler"] in STUDENT_SAMPLERS else []):
            t = teacher.get(s["w"])
            if t is not None and t["fd"]:
                found.append({"model": run["model"], "steps": run["steps"], "w": s["w"], "fd": s["fd"],
                              "teacher_fd": t["fd"], "fd_ratio": s["fd"] / t["fd"], "accuracy": s["accuracy"],
                              "teacher_accuracy": t["accuracy"]})
    return found


def gen_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="clipdiff eval-gen", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", default=None, help="text file, one prompt per line (default: the reference three)")
    parser.add_argument("--w", action="append", type=float, help="guidance weight; repeat for several "
                                                                 "(default: the reference list)")
    parser.add_argument("--n", type=int, default=8, help="images per prompt and w (image k from seed + k)")
    parser.add_argument("--json", default="outputs/eval-gen.json", help="report; the plot goes beside it as .png")
    parser.add_argument("--unet", action="append", help="diffusion checkpoint folder; repeat to compare models "
                                                        f"(default: {DEFAULT_UNET_DIR})")
    parser.add_argument("--clip", default="default")
    parser.add_argument("--clip-pretrained", default=None)
    parser.add_argument("--real", default="atlas", help="real images to compare with: 'atlas' (the shipped "
                                                        "embedding atlas), a folder of images, or 'none'")
    parser.add_argument("--max-real", type=int, default=MAX_REAL, help="real embeddings used at most (seeded sample)")
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS)
    parser.add_argument("--sampler", choices=SAMPLERS, default=DEFAULT_SAMPLER)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--species", type=int, default=0, help="opt-in, the independent yardstick: images per "
                        "species prompt ('a photo of a {species}, a type of flower.', 102 prompts), measured by a "
                        "species classifier of our own (clipdiff.training.yardstick), e.g. 4; the classifier is "
                        "trained first if --yardstick has none (about 1,800 steps: many minutes on 2 cores). "
                        "Default 0: left out, so eval-gen answers in seconds")
    parser.add_argument("--species-w", action="append", type=float, help="w of the species prompts; repeat for "
                        "several (default: 2, the app's default)")
    parser.add_argument("--yardstick", default=None, help="the species classifier's folder (default runs/yardstick; "
                                                          "trained there first if missing)")
    parser.add_argument("--data", default=None, help="the data the yardstick's real images come from "
                                                     "(default ../shared/data)")
    parser.add_argument("--fast", nargs="?", const=str(DEFAULT_FAST_DIR), default=None, metavar="DIR",
                        help="also measure the fast mode's student of the first --unet (DIR default "
                             "checkpoints/fast): its rows at each --fast-steps, same prompts, seeds and yardstick")
    parser.add_argument("--fast-steps", action="append", type=int,
                        help="student steps of the fast rows; repeat for several (default: 4 and 2)")
    parser.add_argument("--device", default="auto")
    return parser


def main_gen(argv=None):
    parser = gen_parser()
    args = parser.parse_args(argv)
    fast_steps = args.fast_steps or [4, 2]
    if args.fast and not all(1 <= k <= 8 for k in fast_steps):
        parser.error("--fast-steps must be between 1 and 8")
    prompts = read_prompts(args.prompts) if args.prompts else list(REFERENCE_PROMPTS)
    ws = args.w or list(REFERENCE_WS)
    if not prompts:
        parser.error(f"no prompts in {args.prompts}")
    if args.n < 2:
        parser.error("--n must be at least 2: diversity compares the images of one prompt")
    if not 1 <= args.steps <= 1000:
        parser.error("--steps must be between 1 and 1000")
    if args.species < 0:
        parser.error("--species must be 0 (no yardstick) or more")

    encoder = ClipEncoder.load(args.clip, args.clip_pretrained, args.device)
    pipelines = []
    for folder in args.unet or [str(DEFAULT_UNET_DIR)]:
        model, config = load_diffusion(folder, encoder.device)
        pipelines.append((folder, ClipDiffusionPipeline(encoder, model, config, model_id_of(Path(folder)))))
    if args.fast:
        try:
            pipelines[0][1].with_student(args.fast, runtime="torch")
        except CheckpointError as e:
            parser.error(str(e))

    real_emb, real_source = real_embeddings(args.real, encoder, pipelines[0][1].image_size, args.max_real, args.seed)
    real = None
    if real_emb is None:
        print(f"no real images: {real_source}. FD_CLIP and CMMD are left out.", file=sys.stderr)
    else:
        real = RealReference.of(real_emb, real_source, max_real=args.max_real, seed=args.seed)
    print(FID_NOTE)

    judge = species_judge(args, pipelines[0][1].image_size) if args.species else None
    species_ws = args.species_w or [DEFAULT_W]
    runs = []
    # What is measured: each --unet with --sampler at --steps, then (--fast) the first one's student at each
    # --fast-steps, with the same prompts, seeds, real images and yardstick.
    measured = [(folder, pipe, pipe.model_id, args.sampler, args.steps) for folder, pipe in pipelines]
    if args.fast:
        pipe = pipelines[0][1]
        measured += [(args.fast, pipe, f"{pipe.student_id} (fast, {k} steps)", STUDENT_SAMPLERS[0], k)
                     for k in fast_steps]
    for folder, pipe, name, sampler, steps in measured:
        def progress(w, r, _images, model=name):
            print(f"  {model}  w = {w:g}: {r['n_images']} images in {r['seconds']:.1f} s", flush=True)

        low, high = pipe.student_config.w_range if sampler in STUDENT_SAMPLERS else (-math.inf, math.inf)
        answered = [w for w in ws if low <= w <= high]      # the student answers only the w it learned
        results = guidance_curve(pipe, prompts, answered, args.n, args.seed, steps, sampler, real=real,
                                 on_w=progress) if answered else []
        runs.append({"unet": str(folder), "model": name, "sampler": sampler, "steps": steps, "clip": encoder.identity,
                     "trained_with_clip": pipe.config.clip_identity, "results": results,
                     "lowest_cmmd_w": best_w(results, "cmmd"), "lowest_fd_w": best_w(results, "frechet_distance")})
        if judge is not None:
            runs[-1]["species"] = [judge.judge(pipe, args.species, w, steps, sampler, args.seed)
                                   for w in species_ws if low <= w <= high]
        if args.fast:    # does the student follow w as its teacher does: every run over the student's w range
            lo, hi = pipelines[0][1].student_config.w_range
            runs[-1]["w_response"] = {"w_from": lo, "w_to": hi, "uint8_levels": w_response(
                pipe, prompts, args.n, args.seed, steps, sampler, lo, hi)}
            print(f"  {name}: w {lo:g} -> {hi:g} changes its pictures by "
                  f"{runs[-1]['w_response']['uint8_levels']:.1f} uint8 levels on average", flush=True)
    for run in runs:
        print_table(run["model"], run["results"])
    if judge is None:
        print("\n(the independent yardstick, a species classifier's FD, KID and accuracy over 102 species prompts, "
              "is opt-in: --species 4)")
    species_reference = None
    if judge is not None:
        species_reference = judge.references(args.species)
        print_species_table(runs, species_reference, judge)
        fast_ratios = fast_vs_teacher(runs)
        for r in fast_ratios:
            print(f"  {r['model']} at w = {r['w']:g}: FD {r['fd_ratio']:.2f}x the teacher's, species accuracy "
                  f"{r['accuracy']:.3f} against {r['teacher_accuracy']:.3f}")

    out = Path(args.json)
    report = {"command": "eval-gen", "prompts": prompts, "ws": ws, "n": args.n, "seed": args.seed,
              "seeds": f"image k of each prompt uses seed + k ({args.seed}..{args.seed + args.n - 1}) at every w",
              "steps": args.steps, "sampler": args.sampler, "clip": encoder.identity,
              "real": {"source": real_source, "count": None if real is None else len(real.features),
                       "available": None if real is None else real.total},
              "metrics": {"clip_score": "mean of 100 * max(cos(image, prompt), 0) (similarity.clip_score)",
                          "frechet_distance": "Frechet distance of unit-norm CLIP image embeddings (FD_CLIP)",
                          "cmmd": "MMD^2 x1000, Gaussian RBF kernel sigma=10, unit-norm CLIP image embeddings "
                                  "(Jayasumana et al. 2024)",
                          "kid": "unbiased MMD^2 x1000, cubic polynomial kernel (KID, Binkowski et al. 2018), "
                                 "unit-norm CLIP image embeddings",
                          "diversity": "mean pairwise cosine distance of one prompt's images, averaged"},
              "note": FID_NOTE, "runs": runs, "plot": out.with_suffix(".png").name}
    if judge is not None and args.fast:
        report["fast_vs_teacher"] = fast_ratios
    if judge is not None:
        report["species"] = {"n_per_species": args.species, "species": len(judge.species),
                             "classifier": {k: judge.yardstick.info.get(k) for k in
                                            ("heldout_accuracy", "train_images", "image_size", "widths")},
                             "reference": species_reference, "metrics": SPECIES_METRICS}
    _write_json(report, out)
    plot_curves(runs, out.with_suffix(".png"))
    print(f"\nwrote {out} and {out.with_suffix('.png')}")
    return 0
