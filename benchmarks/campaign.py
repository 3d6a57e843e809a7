"""The training campaign of issue 12 as one prepared script: recipe comparisons at equal CPU minutes, then the
long runs of the winners, all under one deadline. It runs wherever there is compute (a GPU machine when one is
lent, or this laptop for days); nothing else depends on it.

    python benchmarks/campaign.py --data DATA --runs runs/campaign --deadline-s 540 --pack OUT

Stages (several run at once, each a plain `python -m clipdiff ...` command with its own log):
  1. the species classifier (the independent yardstick), and the shipped CLIP's embeddings;
  2. all at once: CLIP recipes, each for the steps that fit in --cpu-minutes on a 2-core laptop
     (benchmarks/step_cost.json), with held-out eval-clip figures along the way; U-Net recipes likewise on the
     shipped CLIP's embeddings, judged by the yardstick; the long CLIP run (--clip-long recipe), time-boxed;
  3. the long CLIP's embeddings, then the long U-Net run with the best U-Net recipe that the laptop can still
     sample interactively (same architecture cost as the shipped one), time-boxed to the deadline;
  4. the final figures, and (with --pack) the weights and logs, tarred and split into <= 15 MB parts.
Decisions and figures go to runs/campaign/campaign.json as they are made.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from recipes import (CLIP_RECIPES, UNET_RECIPES, budget_steps, recipe_flags)  # noqa: E402

PROJECT = Path(__file__).resolve().parents[1]
# U-Net recipes whose sampling costs what the shipped U-Net's does: the only ones that can ship (generate_4_s).
SHIPPABLE = ("unet-mse", "unet-minsnr", "unet-minsnr-lr3e-4", "unet-minsnr-b128", "unet-minsnr-noflip",
             "unet-minsnr-bf16")


class Campaign:
    def __init__(self, args):
        self.args = args
        self.start = time.monotonic()
        self.runs = Path(args.runs)
        self.runs.mkdir(parents=True, exist_ok=True)
        self.report_path = self.runs / "campaign.json"
        self.report = {"started": time.strftime("%Y-%m-%d %H:%M:%S"), "args": vars(args), "events": []}
        self.procs: dict[str, subprocess.Popen] = {}
        cost = json.loads(Path(args.step_cost).read_text())["seconds_per_step"]
        self.cost = cost

    # -- bookkeeping -----------------------------------------------------------------------------------------
    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def left(self) -> float:
        return self.args.deadline_s - self.elapsed()

    def note(self, what: str, **facts) -> None:
        event = {"t": round(self.elapsed(), 1), "what": what, **facts}
        self.report["events"].append(event)
        print(f"[{event['t']:7.1f}s] {what} {json.dumps(facts) if facts else ''}", flush=True)
        self.save()

    def save(self) -> None:
        self.report_path.write_text(json.dumps(self.report, indent=2) + "\n")

    def launch(self, name: str, argv: list[str]) -> subprocess.Popen:
        log = open(self.runs / f"{name}.log", "w")
        env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", TQDM_MININTERVAL="10")
        cmd = [sys.executable, "-m", "clipdiff", *argv]
        log.write(" ".join(cmd) + "\n")
        log.flush()
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=PROJECT, env=env)
        self.procs[name] = proc
        self.note("launch", job=name)
        return proc

    def wait(self, names, until_left: float = 0.0) -> list[str]:
        """Wait for the named jobs (or until only until_left seconds are left); the names that finished well."""
        names = [n for n in names if n in self.procs]      # a job never started is not waited for
        while any(self.procs[n].poll() is None for n in names) and self.left() > until_left:
            time.sleep(2)
        ok = []
        for n in names:
            rc = self.procs[n].poll()
            if rc == 0:
                ok.append(n)
            elif rc is not None:
                self.note("failed", job=n, rc=rc, tail=tail(self.runs / f"{n}.log"))
        return ok

    def stop_all(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is None:
                proc.terminate()
                self.note("stopped at the deadline", job=name)
        for proc in self.procs.values():   # a training run saves and exports its last step on SIGTERM
            try:
                proc.wait(timeout=self.args.pack_s / 2)
            except subprocess.TimeoutExpired:
                proc.kill()

    # -- the stages ------------------------------------------------------------------------------------------
    def scaled(self, steps: int) -> int:
        return max(int(steps * self.args.scale), 2)

    def clip_job(self, name: str, steps: int, out: Path, *extra: str) -> list[str]:
        return clip_job_argv(name, steps, out, self.args.data, self.args.device, self.args.eval_points, *extra)

    def unet_job(self, name: str, steps: int, out: Path, embeddings: Path, clip: str, *extra: str) -> list[str]:
        return unet_job_argv(name, steps, out, self.args.data, embeddings, clip, self.runs / "yardstick",
                             self.args.eval_points, *extra)

    def run(self) -> None:
        a, runs = self.args, self.runs
        shipped = runs / "clip-shipped"      # a copy: the long CLIP replaces checkpoints/clip on this machine later
        shutil.copytree(a.shipped_clip, shipped, dirs_exist_ok=True)
        a.shipped_clip = str(shipped)
        self.launch("yardstick", ["train-yardstick", "--data", a.data, "--out", str(runs / "yardstick"),
                                  "--device", a.device, "--epochs", str(max(int(20 * min(a.scale * 10, 1)), 1))])
        self.launch("embed-shipped", ["embed", "--data", a.data, "--clip", a.shipped_clip,
                                      "--out", str(runs / "emb-shipped"), "--device", a.device])
        clip_long = runs / "clip-long"
        self.launch("clip-long", self.clip_job(a.clip_long, a.clip_long_max_steps, clip_long,
                                               "--max-seconds", str(a.clip_long_s),
                                               "--eval-every", str(a.clip_long_eval_every)))
        clip_jobs = {}
        for name in CLIP_RECIPES:
            if name not in a.skip:
                clip_jobs[f"cmp-{name}"] = (name, self.scaled(budget_steps(self.cost[name], a.cpu_minutes)))
        self.report["clip_budget_steps"] = {n: s for n, s in clip_jobs.values()}
        for job, (name, steps) in clip_jobs.items():
            self.launch(job, self.clip_job(name, steps, runs / job))

        unet_jobs = {}
        if self.wait(["yardstick", "embed-shipped"]) == ["yardstick", "embed-shipped"]:
            for name in UNET_RECIPES:
                if name not in a.skip:
                    unet_jobs[f"cmp-{name}"] = (name, self.scaled(budget_steps(self.cost[name], a.cpu_minutes)))
            for job, (name, steps) in unet_jobs.items():
                self.launch(job, self.unet_job(name, steps, runs / job, runs / "emb-shipped", a.shipped_clip))
        self.report["unet_budget_steps"] = {n: s for n, s in unet_jobs.values()}

        # -- the long U-Net on the long CLIP's embeddings
        self.wait(["clip-long"])
        self.report["clip_long"] = {"curve": rows(clip_long / "eval.csv")}
        clip_export = clip_long / "export"
        if not (clip_export / "open_clip_model.safetensors").is_file():
            self.note("no long CLIP: the long U-Net uses the shipped CLIP")
            clip_export, emb, clip_name = Path(a.shipped_clip), runs / "emb-shipped", a.shipped_clip
        else:
            # In place of the default CLIP (this checkout is a throwaway copy when it runs on a lent machine;
            # --install-clip no keeps it), so the long U-Net records the default CLIP's identity.
            clip_name = str(clip_export)
            if a.install_clip == "yes":
                shutil.copytree(clip_export, PROJECT / "checkpoints" / "clip", dirs_exist_ok=True)
                clip_name = "default"
            emb = runs / "emb-long"
            self.launch("embed-long", ["embed", "--data", a.data, "--clip", clip_name, "--out", str(emb),
                                       "--device", a.device])
            self.wait(["embed-long"])
        # the comparisons that are not done by now go on beside the long run, and are judged as far as they got
        self.wait(list(unet_jobs), until_left=self.left())
        winner = pick_unet({job: rows(runs / job / "yardstick.csv") for job in unet_jobs}, a.unet_long)
        self.report["unet_long_recipe"] = winner
        seconds = max(self.left() - a.pack_s - a.startup_s, 30)
        self.launch("unet-long", self.unet_job(winner, a.unet_long_max_steps, runs / "unet-long", emb,
                                               clip_name, "--max-seconds", str(seconds),
                                               "--batch-size", str(a.unet_long_batch),
                                               "--eval-every", str(a.unet_long_eval_every),
                                               "--sample-every", str(a.unet_long_eval_every),
                                               "--save-every", "1000"))
        self.wait(["unet-long"], until_left=a.pack_s)
        self.stop_all()
        self.report["unet_comparison"] = {job: rows(runs / job / "yardstick.csv") for job in unet_jobs}
        self.report["clip_comparison"] = {job: rows(runs / job / "eval.csv") for job in clip_jobs}
        self.report["unet_long"] = {"curve": rows(runs / "unet-long" / "yardstick.csv")}
        self.note("done")
        if a.pack:
            self.pack(Path(a.pack), clip_export)

    def pack(self, out: Path, clip_export: Path) -> None:
        """Weights and small files into OUT as <= 15 MB parts (the device tool returns 8 files of <= 16 MB)."""
        out.mkdir(parents=True, exist_ok=True)
        staging = self.runs / "pack"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        for src, dst in ((clip_export, "clip"), (self.runs / "unet-long" / "export", "unet"),
                         (self.runs / "yardstick", "yardstick")):
            if Path(src).is_dir():
                shutil.copytree(src, staging / dst)
        for f in self.runs.rglob("*"):
            if f.suffix in (".csv", ".json", ".log") or (f.suffix == ".png" and "unet-long" in str(f)):
                if "pack" not in f.parts and f.is_file():
                    target = staging / "files" / f.relative_to(self.runs)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(f, target)
        subprocess.run(f"tar czf - -C {staging} . | split -b 15m - {out}/campaign.tgz.part-", shell=True, check=True)
        self.note("packed", parts=sorted(p.name for p in out.iterdir()))


def clip_job_argv(name: str, steps: int, out: Path, data: str, device: str, eval_points: int, *extra: str) -> list[str]:
    """`python -m clipdiff ...` arguments of one CLIP recipe run: held-out figures eval_points times along it."""
    return ["train-clip", *recipe_flags("clip", name), "--data", data, "--threads", "1", "--out", str(out),
            "--export", str(out / "export"), "--max-steps", str(steps),
            "--eval-every", str(max(steps // eval_points, 1)), "--save-every", str(max(steps // 8, 1)),
            "--device", device, *extra]


def unet_job_argv(name: str, steps: int, out: Path, data: str, embeddings: Path, clip: str, yardstick: Path,
                  eval_points: int, *extra: str) -> list[str]:
    """One U-Net recipe run, judged by the yardstick (4 images per species prompt) eval_points times along it."""
    return ["train-unet", *recipe_flags("unet", name), "--data", data, "--threads", "1", "--out", str(out),
            "--export", str(out / "export"), "--embeddings", str(embeddings), "--clip", clip,
            "--max-steps", str(steps), "--eval-every", str(max(steps // eval_points, 1)),
            "--eval-per-species", "4", "--yardstick", str(yardstick), "--sample-every", "0",
            "--save-every", str(max(steps // 8, 1)), *extra]


def tail(path: Path, n: int = 8) -> str:
    try:
        return "".join(path.read_text().splitlines(keepends=True)[-n:])[-1500:]
    except OSError:
        return ""


def rows(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with path.open() as f:
        return [{k: float(v) for k, v in r.items()} for r in csv.DictReader(f)]


def pick_unet(curves: dict[str, list[dict]], fallback: str) -> str:
    """The shippable recipe with the lowest yardstick FD, compared at the same share of every budget (the latest
    evaluation all of them reached: each evaluates at the same fractions of its steps); the fallback if none did."""
    curves = {job.removeprefix("cmp-"): rows for job, rows in curves.items()
              if rows and job.removeprefix("cmp-") in SHIPPABLE}
    if not curves:
        return fallback
    k = min(len(rows) for rows in curves.values())
    return min((rows[k - 1]["fd"], name) for name, rows in curves.items())[1]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True)
    p.add_argument("--runs", default="runs/campaign")
    p.add_argument("--device", default="auto")
    p.add_argument("--shipped-clip", default="checkpoints/clip")
    p.add_argument("--step-cost", default=str(Path(__file__).resolve().parent / "step_cost.json"))
    p.add_argument("--cpu-minutes", type=float, default=25.0, help="the comparisons' budget on a 2-core laptop")
    p.add_argument("--scale", type=float, default=1.0, help="multiply every comparison's steps (a dry run: 0.01)")
    p.add_argument("--skip", nargs="*", default=[], help="recipes left out")
    p.add_argument("--eval-points", type=int, default=4, help="figures per comparison run (its curve)")
    p.add_argument("--clip-long", default="clip-resnet")
    p.add_argument("--clip-long-s", type=float, default=200.0)
    p.add_argument("--clip-long-max-steps", type=int, default=20000)
    p.add_argument("--clip-long-eval-every", type=int, default=500)
    p.add_argument("--unet-long", default="unet-minsnr", help="used when no comparison finished")
    p.add_argument("--unet-long-batch", type=int, default=128)
    p.add_argument("--unet-long-max-steps", type=int, default=40000)
    p.add_argument("--unet-long-eval-every", type=int, default=1500)
    p.add_argument("--deadline-s", type=float, default=540.0, help="everything, packing included, ends by then")
    p.add_argument("--pack-s", type=float, default=40.0)
    p.add_argument("--startup-s", type=float, default=75.0,
                   help="kept for the long U-Net's start (imports, data, CUDA) and its last evaluation and export")
    p.add_argument("--install-clip", choices=("yes", "no"), default="no",
                   help="yes: the long CLIP replaces checkpoints/clip before the long U-Net (on a throwaway copy)")
    p.add_argument("--pack", default=None, help="folder for the packed results (the device's $OUT)")
    Campaign(p.parse_args(argv)).run()


if __name__ == "__main__":
    main()
