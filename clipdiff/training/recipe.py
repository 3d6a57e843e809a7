"""The shipped models' recipe as data: the stages that trained them, in order, each with its settings, and what a
step of each costs where it has been measured.

train-default runs these stages (its flags' defaults are this table); `--dry-run` prints them with the time each
would take on this machine; the model card lists them beside the runs that shipped, which checkpoints/stages.json
records (which machine trained each stage, for how long, and where the shipped run differed from the recipe).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from ..checkpoints import CHECKPOINTS_DIR, PROJECT_ROOT, atomic_save_json, read_json

MODELS = {"clip": "flowers CLIP", "unet": "diffusion U-Net"}
RECORDS_NAME = "stages.json"          # beside the checkpoints: the recorded runs the model card is written from
SHIPPED_RECORDS = CHECKPOINTS_DIR / RECORDS_NAME
STEP_COST_FILE = PROJECT_ROOT / "benchmarks" / "step_cost.json"
LR_FLOOR = 0.1                        # training.common.lr_factor's cosine ends at this share of the stage's lr


@dataclass(frozen=True)
class Stage:
    """One training run of one model: the rest of its settings are the trainer's defaults (train-clip, train-unet)."""
    name: str                         # the model and its place in its chain: "clip-1", "unet-3"
    model: str                        # "clip" or "unet"
    init_from: str | None             # the stage whose export it starts from; None: from scratch
    steps: int
    batch_size: int
    lr: float
    warmup_steps: int                 # linear warm-up, then cosine decay to LR_FLOOR x lr over the stage's steps
    ema_decay: float | None = None    # U-Net stages: their EMA weights are what they export
    conditions: str | None = None     # U-Net stages: the CLIP stage whose embeddings condition them

    @property
    def images_seen(self) -> int:
        return self.steps * self.batch_size

    def settings(self) -> dict:
        """What the stage's flags set (--clip-1-steps ...): every field but its name and model."""
        return {k: v for k, v in asdict(self).items() if k not in ("name", "model")
                and not (self.model == "clip" and k in ("ema_decay", "conditions"))}


# What each setting means, as train-default's --help says it.
SETTING_HELP = {
    "init_from": "the stage whose export it starts from ('none': from scratch)",
    "steps": "training steps",
    "batch_size": "images per step",
    "lr": f"AdamW's peak learning rate (a cosine takes it down to {LR_FLOOR:g} x over the steps)",
    "warmup_steps": "linear warm-up steps first",
    "ema_decay": "decay of the weights' moving average (the average is what the stage exports)",
    "conditions": "the CLIP stage whose embeddings of the training images condition it",
}


# The shipped models' stages, in an order that runs each after what it needs. The U-Net's stages 1 and 2 both
# condition on clip-1: the shipped stage 1 conditioned on a CLIP of the GPU campaign that was not kept (the
# records say so), and clip-1 is the nearest stage the recipe has.
SHIPPED_STAGES: tuple[Stage, ...] = (
    Stage("clip-1", "clip", None, steps=2000, batch_size=256, lr=5e-4, warmup_steps=50),
    # no warm-up, as shipped: its time-boxed run skipped the 30 steps it planned
    Stage("clip-2", "clip", "clip-1", steps=4208, batch_size=256, lr=3e-4, warmup_steps=0),
    Stage("unet-1", "unet", None, steps=2521, batch_size=128, lr=1e-3, warmup_steps=200, ema_decay=0.999,
          conditions="clip-1"),
    Stage("unet-2", "unet", "unet-1", steps=1879, batch_size=64, lr=5e-4, warmup_steps=200, ema_decay=0.999,
          conditions="clip-1"),
    Stage("unet-3", "unet", "unet-2", steps=1801, batch_size=64, lr=5e-4, warmup_steps=200, ema_decay=0.998,
          conditions="clip-2"),
)


def final_stage(stages, model: str) -> Stage:
    """The stage whose export ships: the last of its model."""
    return [s for s in stages if s.model == model][-1]


def needs(stage: Stage) -> list[str]:
    """The stages whose exports this one reads."""
    return [n for n in (stage.init_from, stage.conditions) if n]


def check_order(stages) -> list[str]:
    """Problems with a table of stages, in words: unknown or later stages named, a U-Net conditioned on a U-Net."""
    seen, models, problems = set(), {s.name: s.model for s in stages}, []
    for s in stages:
        if s.init_from and models.get(s.init_from) != s.model:
            problems.append(f"{s.name} starts from {s.init_from}, which is not a {s.model} stage")
        if s.model == "unet" and models.get(s.conditions) != "clip":
            problems.append(f"{s.name} is conditioned on {s.conditions}, which is not a CLIP stage")
        problems += [f"{s.name} needs {n}, which comes after it" for n in needs(s) if n in models and n not in seen]
        seen.add(s.name)
    return problems


# -- what ran: the records ---------------------------------------------------------------------------------------
def record(stage: Stage, machine: str, device: str, train_seconds: float, **facts) -> dict:
    """A stage as it ran: its settings, the machine (in words) and device kind ("cpu", "cuda"), its training
    seconds; facts may add shared_with (what else ran on the machine), time_boxed_s (a run that ended with its
    time) and notes (where it differed from the recipe, what it reached)."""
    return {**asdict(stage), "machine": machine, "device": device, "train_seconds": round(train_seconds), **facts}


def machine_text(rec: dict) -> str:
    return rec["machine"] + (f" shared with {rec['shared_with']}" if rec.get("shared_with") else "")


def stage_of(rec: dict) -> Stage:
    return Stage(**{f.name: rec.get(f.name) for f in fields(Stage)})


def load_records(path: Path = SHIPPED_RECORDS) -> dict:
    """{"stages": [record, ...], "previous": {model: images seen by the models these replaced}}."""
    return read_json(path) if Path(path).is_file() else {"stages": [], "previous": {}}


def save_records(records: dict, path: Path) -> None:
    atomic_save_json(records, path)


# -- what a stage costs ------------------------------------------------------------------------------------------
# benchmarks/step_cost.py's recipes with the model and batch of a stage: their seconds per step on a 2-core CPU
# (2 threads) are what the CPU estimates use.
STEP_COST_RECIPES = {("clip", 256): "clip-resnet", ("unet", 64): "unet-minsnr", ("unet", 128): "unet-minsnr-b128"}


@dataclass(frozen=True)
class Estimate:
    seconds: float | None
    source: str                       # where the seconds per step come from, or why there is no estimate

    def __str__(self) -> str:
        return f"{duration(self.seconds)} ({self.source})" if self.seconds is not None else f"? ({self.source})"


def step_costs(path: Path = STEP_COST_FILE) -> dict[str, float]:
    return json.loads(Path(path).read_text())["seconds_per_step"] if Path(path).is_file() else {}


def estimate(stage: Stage, kind: str, records: list[dict], costs: dict[str, float]) -> Estimate:
    """The stage's training time on a device kind ("cpu" or "cuda"): CPUs from benchmarks/step_cost.json, GPUs
    from the recorded GPU runs of the same model (at another batch size: assumed the same per step, as a GPU
    this size is far from full with these small models)."""
    if kind == "cpu":
        name = STEP_COST_RECIPES.get((stage.model, stage.batch_size))
        if name in costs:
            return Estimate(stage.steps * costs[name],
                            f"{costs[name]:.2f} s/step, 2-core CPU, benchmarks/step_cost.json")
        return Estimate(None, f"no CPU step cost of a {stage.model} step at batch {stage.batch_size}")
    runs = [r for r in records if r["device"] == kind and r["model"] == stage.model]
    same = [r for r in runs if r["batch_size"] == stage.batch_size]
    if not runs:
        return Estimate(None, f"no {stage.model} stage has run on a {kind} device")
    r = (same or runs)[0]
    per_step = r["train_seconds"] / r["steps"]
    how = "measured" if same else f"assumed: batch {r['batch_size']}'s"
    return Estimate(stage.steps * per_step, f"{per_step:.3f} s/step, {how}, {r['name']} on {machine_text(r)}")


def duration(seconds: float) -> str:
    """Seconds as a reader wants them: s under five minutes, min under four hours, else h."""
    if seconds < 300:
        return f"{seconds:.0f} s"
    if seconds < 4 * 3600:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def total(estimates: list[Estimate]) -> float | None:
    return None if any(e.seconds is None for e in estimates) else sum(e.seconds for e in estimates)


def plan_text(stages, kind: str, machine: str, records: list[dict], costs: dict[str, float]) -> str:
    """The --dry-run plan: each stage's settings, where it shipped, and its estimated time on this machine."""
    shipped = {r["name"]: r for r in records}
    rows = [("stage", "from", "conditions", "steps", "batch", "lr", "warm-up", "EMA", "shipped: on", "took",
             "estimate here")]
    estimates = []
    for s in stages:
        e = estimate(s, kind, records, costs)
        estimates.append(e)
        ran = shipped.get(s.name)
        rows.append((s.name, s.init_from or "scratch", s.conditions or "-", f"{s.steps:,}", str(s.batch_size),
                     f"{s.lr:g}", str(s.warmup_steps), "-" if s.ema_decay is None else f"{s.ema_decay:g}",
                     ran["machine"] if ran else "-", duration(ran["train_seconds"]) if ran else "-", str(e)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r[:-1], widths)) + "  " + r[-1] for r in rows]
    t = total(estimates)
    lines.append(f"\ntraining steps in all: {duration(t) if t is not None else 'not estimated'} on {machine}"
                 " (estimates: see each stage's source); not timed: the CLIP's held-out evaluation, the"
                 " embeddings of each conditioning CLIP, the atlas and the U-Net's sample grids")
    return "\n".join(lines)


def recipe_durations(stages=SHIPPED_STAGES, records_path: Path = SHIPPED_RECORDS) -> str:
    """How long the recipe's training steps take on 2 CPU cores and on a GPU, in one sentence (the README's)."""
    records = load_records(records_path)["stages"]
    costs = step_costs()
    cpu = total([estimate(s, "cpu", records, costs) for s in stages])
    gpu = total([estimate(s, "cuda", records, costs) for s in stages])
    gpus = " and ".join(sorted({r["machine"] for r in records if r["device"] == "cuda"}))
    return (f"The recipe's training steps take about {duration(cpu)} on 2 CPU cores and about {duration(gpu)} on a "
            f"GPU (`train-default --dry-run` shows each stage's estimate and where its seconds per step were "
            f"measured: benchmarks/step_cost.json on the CPU, the shipped stages on {gpus}); the embeddings, the "
            f"atlas and the evaluations come on top.")
