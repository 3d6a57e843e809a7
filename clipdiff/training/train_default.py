"""Rebuild the shipped models with the recipe that shipped them: the stages of clipdiff/training/recipe.py, each a
train-clip or train-unet run, then the CLIP's held-out evaluation, the embeddings, the atlas and the model card.

    python -m clipdiff train-default --dry-run          # the stages, with the time each would take here
    python -m clipdiff train-default [--device auto|cpu|cuda] [--stages clip-1 clip-2 ...] [--data DATA]

Every stage resumes: runs/STAGE keeps its trainer's state, so a stopped run goes on where it was, and a stage that
finished with these settings (runs/STAGE/stage.json, the record of its run) is skipped. The last stage of each model
is installed into --checkpoints; once every stage has a record, their records go to checkpoints/stages.json and the
model card (checkpoints/README.md) is written from them.

The stage flags' defaults (a group per stage below) are the shipped recipe; the other settings are train-clip's and
train-unet's defaults. --clip-flags and --unet-flags pass more flags to every CLIP or U-Net stage (write them with
'=': --unet-flags='--sample-every 0').
"""
from __future__ import annotations

import argparse
import os
import shlex
import shutil
from pathlib import Path

import torch

from .. import data as data_mod
from ..checkpoints import CHECKPOINTS_DIR, DEFAULT_CLIP_DIR, atomic_save_json, read_json
from ..devices import resolve_device
from . import train_clip, train_unet
from .model_card import ASSETS_DIR, write_model_card
from .recipe import (MODELS, RECORDS_NAME, SETTING_HELP, SHIPPED_RECORDS, SHIPPED_STAGES, Stage, check_order,
                     duration, final_stage, load_records, machine_text, needs, plan_text, record, save_records,
                     stage_of, step_costs)

RECORD = "stage.json"      # in a stage's run folder: the stage as it ran, written when it finished


def build_parser(stages=SHIPPED_STAGES) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="clipdiff train-default", description=__doc__, usage="%(prog)s [options]",
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    names = [s.name for s in stages]
    parser.add_argument("--stages", nargs="+", choices=names, default=names, metavar="STAGE",
                        help=f"the stages to run, in the table's order (default: all: {' '.join(names)})")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="where every stage trains (default: auto, a GPU when there is one)")
    parser.add_argument("--dry-run", action="store_true", help="print the plan and each stage's estimated time here")
    parser.add_argument("--data", default=None, help="the training images (default: ../shared/data)")
    parser.add_argument("--runs", default="runs", help="where each stage keeps its resumable state (default: runs)")
    parser.add_argument("--checkpoints", default=str(CHECKPOINTS_DIR),
                        help="where the last stages install their models (clip/, unet/, atlas/), their records "
                             "(stages.json) and the model card (default: this checkout's checkpoints/)")
    parser.add_argument("--assets", default=str(ASSETS_DIR),
                        help="where the loss curves and the last reference grid go (default: this checkout's assets/)")
    parser.add_argument("--atlas", choices=("yes", "no"), default="yes",
                        help="rebuild the atlas from the last CLIP's embeddings (default: yes)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: 0, torch's choice)")
    parser.add_argument("--clip-flags", default="", help="more train-clip flags for every CLIP stage (default: none)")
    parser.add_argument("--unet-flags", default="", help="more train-unet flags for every U-Net stage (default: none)")
    shipped = {r["name"]: r for r in load_records(SHIPPED_RECORDS)["stages"]}
    for s in stages:
        ran = shipped.get(s.name)
        group = parser.add_argument_group(
            f"stage {s.name}: the {MODELS[s.model]}, {f'from {s.init_from}' if s.init_from else 'from scratch'}",
            f"shipped: {duration(ran['train_seconds'])} on {machine_text(ran)}" if ran else None)
        for key, value in s.settings().items():
            kind = str if key in ("init_from", "conditions") else type(value) if value is not None else float
            group.add_argument(f"--{s.name}-{key.replace('_', '-')}", dest=_dest(s, key), default=value,
                               type=_none_or(kind), metavar=key.split("_")[0].upper(),
                               help=f"{SETTING_HELP[key]} (default: {'none' if value is None else value})")
    return parser


def _dest(stage: Stage, key: str) -> str:
    return f"{stage.name}_{key}".replace("-", "_")


def _none_or(kind):
    """A stage setting's type; 'none' for no value (a stage from scratch)."""
    return lambda text: None if text.lower() == "none" else kind(text)


def stages_from_args(args, stages=SHIPPED_STAGES) -> list[Stage]:
    """The stage table with the flags' values in place of its defaults."""
    return [Stage(s.name, s.model, **{**s.settings(), **{k: getattr(args, _dest(s, k)) for k in s.settings()}})
            for s in stages]


def describe_machine(device: torch.device) -> str:
    """The machine a stage ran on, as its record says it."""
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} GPU"
    threads, cores = torch.get_num_threads(), os.cpu_count()
    return f"{cores} CPU cores" if threads == cores else f"{threads} of {cores} CPU cores"


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    stages = stages_from_args(args)
    problems = check_order(stages)
    if problems:
        parser.error("; ".join(problems))
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    gpu_here = torch.cuda.is_available()
    if args.dry_run:      # a plan for a GPU may be asked for where there is none: its estimates are recorded ones
        machine = describe_machine(device) if device.type == "cpu" or gpu_here else "a CUDA GPU (none here)"
        print(f"train-default: {len(args.stages)} of {len(stages)} stages on {machine}\n")
        print(plan_text([s for s in stages if s.name in args.stages], device.type, machine,
                        load_records(SHIPPED_RECORDS)["stages"], step_costs()))
        return
    if device.type == "cuda" and not gpu_here:
        parser.error("--device cuda: there is no CUDA GPU here")
    Recipe(args, stages, device).run()


class Recipe:
    """One train-default run: its stages' folders, what each needs, and what is installed where."""

    def __init__(self, args, stages: list[Stage], device: torch.device):
        self.args, self.device = args, device
        self.stages = {s.name: s for s in stages}
        self.runs, self.checkpoints = Path(args.runs), Path(args.checkpoints)
        self.final = {m: final_stage(stages, m).name for m in MODELS}
        self.clip_base = train_clip.build_parser().parse_args(shlex.split(args.clip_flags))

    # -- where things are ------------------------------------------------------------------------------------------
    def folder(self, name: str) -> Path:
        return self.runs / name

    def export(self, name: str) -> Path:
        return self.folder(name) / "export"

    def installed(self, model: str) -> Path:
        return self.checkpoints / model

    def read_record(self, name: str) -> dict | None:
        path = self.folder(name) / RECORD
        return read_json(path) if path.is_file() else None

    def done(self, stage: Stage) -> bool:
        """Finished with these settings, after what it needs last changed (else it must be trained again)."""
        rec = self.read_record(stage.name)
        if rec is None or stage_of(rec) != stage:
            return False
        changed = self.changed_since(stage)
        if changed:
            raise SystemExit(f"{stage.name} was trained before {', '.join(changed)} last changed: delete "
                             f"{self.folder(stage.name)} to train it again on the new weights")
        return True

    def changed_since(self, stage: Stage) -> list[str]:
        """The stages it needs whose records are newer than its own: retrained after it started from them."""
        mine = (self.folder(stage.name) / RECORD).stat().st_mtime
        return [n for n in needs(stage) if (self.folder(n) / RECORD).is_file()
                and (self.folder(n) / RECORD).stat().st_mtime > mine]

    def clip_name(self, name: str) -> str:
        """How a CLIP stage's weights are loaded: the installed default CLIP by its name (the identity a shipped
        U-Net records), any other by its folder."""
        if name == self.final["clip"]:
            folder = self.installed("clip")
            return "default" if folder.resolve() == DEFAULT_CLIP_DIR.resolve() else str(folder)
        return str(self.export(name))

    # -- the run -----------------------------------------------------------------------------------------------------
    def run(self) -> None:
        chosen = [s for s in self.stages.values() if s.name in self.args.stages]
        for i, stage in enumerate(chosen, 1):
            print(f"== {i}/{len(chosen)} {stage.name} ({MODELS[stage.model]})", flush=True)
            self.run_stage(stage)
        self.finish()

    def run_stage(self, stage: Stage) -> None:
        missing = [n for n in needs(stage) if self.read_record(n) is None]
        if missing:
            raise SystemExit(f"{stage.name} needs {' and '.join(missing)}, not run in {self.runs} yet: "
                             f"add {' '.join(missing)} to --stages")
        if self.done(stage):
            print(f"{stage.name}: done before ({self.folder(stage.name) / RECORD}), skipped")
        elif stage.model == "clip":
            train_clip.train(self.clip_args(stage))
            self.write_record(stage, read_json(self.export(stage.name) / "training.json"))
        else:
            train_unet.train(self.unet_args(stage, self.embeddings(stage.conditions)))
            self.write_record(stage, read_json(self.export(stage.name) / "config.json")["training"])
        if stage.name == self.final[stage.model]:
            self.install(stage)

    def common_flags(self, stage: Stage) -> list[str]:
        flags = ["--out", str(self.folder(stage.name)), "--export", str(self.export(stage.name)),
                 "--max-steps", str(stage.steps), "--batch-size", str(stage.batch_size), "--lr", str(stage.lr),
                 "--warmup-steps", str(stage.warmup_steps), "--device", self.device.type,
                 "--threads", str(self.args.threads)]
        flags += ["--data", self.args.data] if self.args.data else []
        return flags + (["--init-from", str(self.export(stage.init_from))] if stage.init_from else [])

    def clip_args(self, stage: Stage) -> argparse.Namespace:
        return train_clip.build_parser().parse_args(shlex.split(self.args.clip_flags) + self.common_flags(stage))

    def unet_args(self, stage: Stage, embeddings: Path) -> argparse.Namespace:
        flags = self.common_flags(stage) + ["--embeddings", str(embeddings), "--clip", self.clip_name(stage.conditions),
                                            "--ema-decay", str(stage.ema_decay)]
        return train_unet.build_parser().parse_args(shlex.split(self.args.unet_flags) + flags)

    def write_record(self, stage: Stage, trained: dict) -> None:
        """The stage's record, once it has run all its steps. A trainer stopped early (SIGTERM, --max-seconds)
        exports what it has: then the whole run stops, so no later stage starts from a stage half done."""
        if trained["steps"] < stage.steps:
            raise SystemExit(f"{stage.name} stopped at step {trained['steps']} of {stage.steps}, saved in "
                             f"{self.folder(stage.name)}: run train-default again to go on")
        atomic_save_json(record(stage, describe_machine(self.device), self.device.type, trained["train_seconds"]),
                         self.folder(stage.name) / RECORD)

    def embeddings(self, clip_stage: str) -> Path:
        """The training images' embeddings by a CLIP stage (runs/STAGE/embeddings), made when missing or older than
        the weights they come from."""
        from ..embed import precompute
        from ..encoders import ClipEncoder

        folder = self.folder(clip_stage) / "embeddings"
        name = self.clip_name(clip_stage)
        weights = (DEFAULT_CLIP_DIR if name == "default" else Path(name)) / "open_clip_model.safetensors"
        if not _older(folder / "index.json", weights) and (folder / "index.json").is_file():
            return folder
        print(f"embeddings of the training images by {clip_stage}", flush=True)
        encoder = ClipEncoder.load(name, device=str(self.device))
        precompute(encoder, data_mod.load_training_data(self.args.data, 64), folder)
        return folder

    def install(self, stage: Stage) -> None:
        """The last stage of a model becomes the shipped one: its export copied into --checkpoints (copies keep
        their times, so an export newer than its copy is one not installed yet), the CLIP with its held-out
        evaluation."""
        target = self.installed(stage.model)
        weights = "open_clip_model.safetensors" if stage.model == "clip" else "model.safetensors"
        if not (target / weights).is_file() or _older(target / weights, self.export(stage.name) / weights):
            shutil.copytree(self.export(stage.name), target, dirs_exist_ok=True)
            print(f"installed {stage.name} into {target}")
        if stage.model == "clip" and not (
                (target / "eval.json").is_file() and not _older(target / "eval.json", target / weights)):
            from ..encoders import ClipEncoder
            from ..evaluate import clip_report

            print("the CLIP on the held-out images (eval-clip)", flush=True)
            encoder = ClipEncoder.load(self.clip_name(stage.name), device=str(self.device))
            a = self.clip_base
            atomic_save_json(clip_report(encoder, self.args.data, a.n_heldout, a.seed, a.image_size),
                             target / "eval.json")

    def finish(self) -> None:
        """The atlas from the last CLIP, the pictures, and once every stage has a record: the records and the card."""
        clip = self.final["clip"]
        if self.args.atlas == "yes" and self.read_record(clip) is not None:
            from ..atlas import build_atlas
            from ..embed import EmbeddingTable

            table = self.embeddings(clip)
            atlas = self.installed("atlas") / "atlas.safetensors"
            if not atlas.is_file() or _older(atlas, table / "index.json"):
                build_atlas(EmbeddingTable.load(table), self.installed("atlas"))
        self.publish_assets()
        records = [self.read_record(n) for n in self.stages]
        if any(r is None for r in records):
            print("the model card is left as it was: not every stage has run here")
            return
        stale = [s.name for s in self.stages.values() if self.changed_since(s)]
        if stale:       # the installed models came from stages trained on what has changed since
            print(f"the model card is left as it was: {', '.join(stale)} started from stages trained again since")
            return
        path = self.checkpoints / RECORDS_NAME
        old = load_records(path)
        previous = old.get("previous", {}) if old["stages"] in ([], records) else \
            {m: sum(r["steps"] * r["batch_size"] for r in old["stages"] if r["model"] == m) for m in MODELS}
        save_records({"previous": previous, "stages": records}, path)
        print(f"model card: {write_model_card(self.checkpoints, Path(self.args.assets))}")

    def publish_assets(self) -> None:
        """The shipped models' own pictures: the last stages' loss curves and the U-Net's last reference grid."""
        assets = Path(self.args.assets)
        assets.mkdir(parents=True, exist_ok=True)
        for model, stage in self.final.items():
            for name in ("loss.png", "loss.csv"):
                if (self.folder(stage) / name).is_file():
                    shutil.copyfile(self.folder(stage) / name, assets / name.replace("loss", f"loss_{model}"))
        grids = sorted((self.folder(self.final["unet"]) / "samples").glob("step_*.png"))
        if grids:
            shutil.copyfile(grids[-1], assets / "reference_grid.png")


def _older(path: Path, than: Path) -> bool:
    return than.is_file() and path.is_file() and path.stat().st_mtime < than.stat().st_mtime
