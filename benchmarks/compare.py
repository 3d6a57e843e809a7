"""Recipe comparisons at equal CPU minutes on this machine, one run after another, and their table.

    python benchmarks/compare.py run clip clip-vit clip-resnet
    python benchmarks/compare.py run unet unet-mse unet-minsnr --embeddings runs/embeddings-shipped \\
        --clip checkpoints/clip --yardstick runs/yardstick
    python benchmarks/compare.py table --md benchmarks/recipes.md --json benchmarks/recipes.json

Each recipe (benchmarks/recipes.py) trains for the steps that fit in --cpu-minutes of a 2-core laptop, as
benchmarks/step_cost.json measured a step of it, so a recipe that costs more per step gets fewer steps. Runs
resume where they stopped (the training scripts' own resume). The same runs go faster on a GPU through
benchmarks/campaign.py; the steps, and so the comparison, are the same.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from campaign import clip_job_argv, rows, unet_job_argv  # noqa: E402
from recipes import BUDGET_CPU_MINUTES, CLIP_RECIPES, UNET_RECIPES, budget_steps, recipe_overrides  # noqa: E402

from clipdiff.data import default_data_root  # noqa: E402

HERE = Path(__file__).resolve().parent
CLIP_FIGURES = ("R@1", "R@5", "R@10", "zero_shot_top1", "zero_shot_top5")
UNET_FIGURES = ("fd", "kid", "accuracy", "top5")


def step_costs(path: Path) -> dict[str, float]:
    return json.loads(path.read_text())["seconds_per_step"]


def run(args) -> None:
    costs = step_costs(Path(args.step_cost))
    data = args.data or str(default_data_root())
    for name in args.recipes:
        steps = budget_steps(costs[name], args.cpu_minutes)
        out = Path(args.runs) / name
        if args.kind == "clip":
            argv = clip_job_argv(name, steps, out, data, args.device, args.eval_points)
        else:
            argv = unet_job_argv(name, steps, out, data, Path(args.embeddings), args.clip, Path(args.yardstick),
                                 args.eval_points)
        argv[argv.index("--threads") + 1] = str(args.threads)
        print(f"== {name}: {steps} steps ({args.cpu_minutes:g} CPU minutes at {costs[name]:.2f} s/step)", flush=True)
        with open(Path(args.runs) / f"{name}.log", "a") as log:
            subprocess.run([sys.executable, "-m", "clipdiff", *argv], stdout=log, stderr=subprocess.STDOUT,
                           check=True)


def collect(runs: Path, costs: dict[str, float]) -> list[dict]:
    """One entry per finished or partial run under runs/: recipe, budget, curve and last figures."""
    found = []
    for kind, recipes, curve_file, keys in (("clip", CLIP_RECIPES, "eval.csv", CLIP_FIGURES),
                                            ("unet", UNET_RECIPES, "yardstick.csv", UNET_FIGURES)):
        for name in recipes:
            curve = rows(runs / name / curve_file)
            if not curve:
                continue
            budget = budget_steps(costs[name])
            last = curve[-1]
            found.append({"kind": kind, "recipe": name, "overrides": recipe_overrides(kind, name),
                          "cpu_s_per_step": costs[name], "budget_steps": budget, "steps": int(last["step"]),
                          "images_seen": int(last["images_seen"]), "complete": int(last["step"]) >= budget,
                          "wall_minutes": round(last["seconds"] / 60, 1),
                          "figures": {k: last[k] for k in keys if k in last}, "curve": curve})
    return found


def markdown(entries: list[dict]) -> str:
    lines = []
    for kind, keys, title in (("clip", CLIP_FIGURES, "CLIP recipes (held-out eval-clip: 1,000 images, 102 species)"),
                              ("unet", UNET_FIGURES, "U-Net recipes (species-prompt yardstick, w = 2, 12 Karras "
                                                     "steps, 4 images per species; FD and KID lower is better)")):
        chosen = [e for e in entries if e["kind"] == kind]
        if not chosen:
            continue
        lines += [f"**{title}**, each {BUDGET_CPU_MINUTES} CPU minutes of a 2-core laptop:", "",
                  "| recipe | changes | s/step (CPU) | steps | images seen | " + " | ".join(keys) + " |",
                  "| --- | --- | --- | --- | --- | " + " | ".join("---" for _ in keys) + " |"]
        for e in chosen:
            changes = ", ".join(f"{k}={v}" for k, v in e["overrides"].items()) or "-"
            steps = f"{e['steps']}" + ("" if e["complete"] else f" of {e['budget_steps']}")
            figures = " | ".join(f"{e['figures'][k]:.3f}" if k in e["figures"] else "-" for k in keys)
            lines.append(f"| {e['recipe']} | {changes} | {e['cpu_s_per_step']:.2f} | {steps} | "
                         f"{e['images_seen']:,} | {figures} |")
        lines.append("")
    return "\n".join(lines)


def plot(entries: list[dict], png: Path, long_runs: dict[str, Path]) -> None:
    """Quality against images seen: the CLIP's held-out R@5 and zero-shot top-1, the U-Net's yardstick FD and
    species accuracy; every comparison run, plus the long runs (long_runs: label -> curve CSV)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = (("clip", "R@5", "CLIP: caption->image R@5 (held out)"),
              ("clip", "zero_shot_top1", "CLIP: zero-shot species top-1"),
              ("unet", "fd", "U-Net: yardstick FD (lower is better)"),
              ("unet", "accuracy", "U-Net: species accuracy of its images"))
    fig, axes = plt.subplots(2, 2, figsize=(11, 7.5))
    for ax, (kind, key, title) in zip(axes.flat, panels):
        for e in entries:
            if e["kind"] == kind:
                ax.plot([r["images_seen"] for r in e["curve"]], [r[key] for r in e["curve"]], marker="o", ms=3,
                        lw=1, label=e["recipe"])
        for i, (label, path) in enumerate(long_runs.items()):    # long runs in black, told apart by their dashes
            curve = rows(Path(path))
            if curve and key in curve[0] and label.startswith(kind):
                ax.plot([r["images_seen"] for r in curve], [r[key] for r in curve], color="black", lw=2.2,
                        ls=("-", "--", ":")[i % 3], marker="s", ms=4, label=label)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("images seen")
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=7)
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=100)
    plt.close(fig)


def table(args) -> None:
    entries = collect(Path(args.runs), step_costs(Path(args.step_cost)))
    text = markdown(entries)
    print(text)
    if args.md:
        Path(args.md).write_text(text + "\n")
    if args.json:
        Path(args.json).write_text(json.dumps(entries, indent=1) + "\n")
    if args.png:
        plot(entries, Path(args.png), dict(item.split("=", 1) for item in args.long))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run")
    r.add_argument("kind", choices=("clip", "unet"))
    r.add_argument("recipes", nargs="+")
    r.add_argument("--embeddings", default="runs/embeddings-shipped")
    r.add_argument("--clip", default="default")
    r.add_argument("--yardstick", default="runs/yardstick")
    r.add_argument("--data", default=None)
    r.add_argument("--device", default="auto")
    r.add_argument("--threads", type=int, default=1)
    r.add_argument("--eval-points", type=int, default=4)
    r.add_argument("--cpu-minutes", type=float, default=BUDGET_CPU_MINUTES)
    t = sub.add_parser("table")
    t.add_argument("--md", default=None)
    t.add_argument("--json", default=None)
    t.add_argument("--png", default=None, help="the curves: quality against images seen")
    t.add_argument("--long", nargs="*", default=[], help="LABEL=CSV of long runs to draw over the comparisons "
                                                         "(labels starting clip or unet)")
    for p in (r, t):
        p.add_argument("--runs", default="runs/compare")
        p.add_argument("--step-cost", default=str(HERE / "step_cost.json"))
    args = parser.parse_args(argv)
    Path(args.runs).mkdir(parents=True, exist_ok=True)
    (run if args.command == "run" else table)(args)


if __name__ == "__main__":
    main()
