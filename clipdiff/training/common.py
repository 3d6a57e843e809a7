"""What both training scripts share: deterministic data order, resumable state, learning-rate shape, loss log.

Resuming gives the same run as not stopping: the batch order of every epoch and every random draw of a
step come from (seed, epoch) and (seed, step), not from a generator's history.
"""
from __future__ import annotations

import argparse
import csv
import math
import os
import shutil
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..checkpoints import (atomic_save_json, atomic_save_safetensors, atomic_torch_save, load_training_state,
                          read_json, read_safetensors)


def add_defaults_to_parser(parser: argparse.ArgumentParser, defaults: dict) -> None:
    """Every default is a flag (improved-diffusion's add_dict_to_argparser)."""
    for key, value in defaults.items():
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            parser.add_argument(flag, type=lambda s: s.lower() in ("1", "true", "yes"), default=value,
                                metavar="BOOL")
        elif isinstance(value, (list, tuple)):
            parser.add_argument(flag, type=type(value[0]), nargs="+", default=list(value))
        elif value is None:
            parser.add_argument(flag, type=str, default=None)
        else:
            parser.add_argument(flag, type=type(value), default=value)


def random_resized_crop_flip(x: torch.Tensor, size: int, scale_min: float, flip_prob: float,
                             gen: torch.Generator) -> torch.Tensor:
    """Per sample: a random square crop of scale_min..1 of the side, resized to size, flipped with flip_prob.

    One affine resampling of the whole batch (on x's device), instead of a crop-and-resize per image: the
    same maths as torchvision's RandomResizedCrop with a fixed aspect ratio, cheap on a GPU. No colour
    jitter on purpose: colour is what the captions describe. The draws come from gen (on the CPU).
    """
    n = x.shape[0]
    scale = scale_min + (1 - scale_min) * torch.rand(n, generator=gen)
    shift = (torch.rand(n, 2, generator=gen) * 2 - 1) * (1 - scale)[:, None]   # keeps the crop inside
    sign = torch.where(torch.rand(n, generator=gen) < flip_prob, -1.0, 1.0)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = scale * sign
    theta[:, 1, 1] = scale
    theta[:, :, 2] = shift
    grid = F.affine_grid(theta.to(x.device, x.dtype), [n, x.shape[1], size, size], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def step_generator(seed: int, step: int) -> torch.Generator:
    return torch.Generator("cpu").manual_seed(seed * 1_000_003 + step)


def batch_indices(n: int, batch_size: int, seed: int, step: int) -> np.ndarray:
    """Indices of the batch at global step: epochs are seeded permutations, the tail of each is dropped."""
    per_epoch = max(n // batch_size, 1)
    epoch, k = divmod(step, per_epoch)
    order = np.random.default_rng([seed, epoch]).permutation(n)
    if n < batch_size:
        order = np.resize(order, batch_size)
    return order[k * batch_size:(k + 1) * batch_size]


def lr_factor(step: int, warmup: int, total: int, floor: float = 0.1, position: int | None = None) -> float:
    """Linear warm-up over the first `warmup` steps, then cosine decay to floor x the base rate. The decay follows
    position (default: the step; a time-boxed run's place in its schedule, `schedule_position`), the warm-up always
    the step: a time-boxed run with a large --max-steps would otherwise skip its warm-up."""
    if step < warmup:
        return (step + 1) / warmup
    decayed = step if position is None else position
    progress = min((decayed - warmup) / max(total - warmup, 1), 1.0)
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))


def schedule_position(step: int, seconds: float, max_steps: int, max_seconds: float) -> int:
    """Where a run is in its learning-rate schedule: its step, or, for a time-boxed run (max_seconds > 0), the
    share of its time spent, whichever is further, so the cosine ends when the time does."""
    if max_seconds <= 0:
        return step
    return max(step, int(max_steps * min(seconds / max_seconds, 1.0)))


def out_of_time(seconds: float, max_seconds: float) -> bool:
    return max_seconds > 0 and seconds >= max_seconds


class StopRequest:
    """SIGTERM (a scheduler's or a campaign's stop) ends a training run after its current step, saved and
    exported, instead of losing the steps since the last save."""

    def __init__(self):
        self.requested = False
        self._previous = None
        try:
            self._previous = signal.signal(signal.SIGTERM, self._request)
        except ValueError:      # not the main thread (e.g. called from a test's worker): no handler
            pass

    def _request(self, signum, frame) -> None:
        self.requested = True

    def restore(self) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


@dataclass
class RunState:
    step: int = 0
    seconds: float = 0.0   # training wall time so far, across resumes


RUN_FILES = ("model.safetensors", "ema.safetensors", "optimizer.pt", "state.json")   # state.json last
PENDING_DIR = ".saving"        # a step being written; its files replace the previous step's only when all are there
COMPLETE = "complete"


def save_run(run_dir: Path, state: RunState, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
             ema_model: torch.nn.Module | None = None, args: dict | None = None) -> None:
    """Weights as safetensors, optimizer moments with torch.save (our own file, read weights_only).

    A step is saved whole or not at all: its files are written into run_dir/.saving, a marker says they are
    complete, and only then do they replace the previous step's. A crash or a full disk while writing leaves
    the previous step in force; a crash while moving is finished by the next load_run.
    """
    pending = run_dir / PENDING_DIR
    shutil.rmtree(pending, ignore_errors=True)
    atomic_save_safetensors(model.state_dict(), pending / "model.safetensors")
    if ema_model is not None:
        atomic_save_safetensors(ema_model.state_dict(), pending / "ema.safetensors")
    atomic_torch_save(optimizer.state_dict(), pending / "optimizer.pt")
    atomic_save_json({"step": state.step, "seconds": state.seconds, "args": args or {}}, pending / "state.json")
    atomic_save_json({"step": state.step}, pending / COMPLETE)
    _commit_pending(run_dir)


def _commit_pending(run_dir: Path) -> None:
    """Move a completely written step into place (state.json last); drop one a crash left half written."""
    pending = run_dir / PENDING_DIR
    if not pending.is_dir():
        return
    if (pending / COMPLETE).is_file():
        for name in RUN_FILES:
            try:
                os.replace(pending / name, run_dir / name)
            except FileNotFoundError:   # not saved (no EMA), or moved before a crash
                pass
    shutil.rmtree(pending, ignore_errors=True)


def load_run(run_dir: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
             ema_model: torch.nn.Module | None = None) -> RunState:
    """Restore a run saved by save_run; a fresh RunState where there is none yet."""
    _commit_pending(run_dir)
    if not (run_dir / "state.json").is_file():
        return RunState()
    meta = read_json(run_dir / "state.json")
    model.load_state_dict(read_safetensors(run_dir / "model.safetensors"))
    if ema_model is not None:
        ema_model.load_state_dict(read_safetensors(run_dir / "ema.safetensors"))
    optimizer.load_state_dict(load_training_state(run_dir / "optimizer.pt"))
    return RunState(step=int(meta["step"]), seconds=float(meta["seconds"]))


@torch.no_grad()
def ema_update(ema_model: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    # One fused call over all tensors (as timm's ModelEmaV3): a loop of lerp_ costs a launch per tensor on a GPU.
    torch._foreach_lerp_(list(ema_model.parameters()), [p.detach() for p in model.parameters()], 1 - decay)


def fast_float32(device: torch.device) -> None:
    """TF32 matrix products on GPUs (10-bit mantissa inputs, fp32 accumulation): the training loops' usual
    setting there; no effect on CPUs."""
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


def append_csv_row(path: Path, header: list[str], row: list) -> None:
    """One row at the end of a CSV file, its header first when the file is new."""
    new = not path.is_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", newline="") as f:
        writer = csv.writer(f)
        if new:
            writer.writerow(header)
        writer.writerow(row)


class LossLog:
    """Appends (step, loss, lr, seconds) to a CSV and redraws a PNG plot of it on request."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def truncate_after(self, step: int) -> None:
        """On resume, drop rows logged after the restored step, so the curve has no duplicate steps."""
        if not self.path.is_file():
            return
        rows = self.rows()
        with self.path.open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["step", "loss", "lr", "seconds"])
            writer.writerows([r for r in rows if r[0] <= step])

    def append(self, step: int, loss: float, lr: float, seconds: float) -> None:
        append_csv_row(self.path, ["step", "loss", "lr", "seconds"], [step, f"{loss:.6f}", f"{lr:.3e}", f"{seconds:.1f}"])

    def rows(self) -> list[tuple[int, float, float, float]]:
        if not self.path.is_file():
            return []
        with self.path.open() as f:
            return [(int(r["step"]), float(r["loss"]), float(r["lr"]), float(r["seconds"]))
                    for r in csv.DictReader(f)]

    def plot(self, png: Path, title: str) -> None:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        rows = self.rows()
        if not rows:
            return
        steps = np.array([r[0] for r in rows])
        loss = np.array([r[1] for r in rows])
        fig, ax = plt.subplots(figsize=(6, 3.2), dpi=110)
        ax.plot(steps, loss, lw=0.6, alpha=0.35, color="tab:blue", label="per step")
        k = max(len(loss) // 50, 1)
        if len(loss) > k:
            smooth = np.convolve(loss, np.ones(k) / k, mode="valid")
            ax.plot(steps[k - 1:], smooth, lw=1.6, color="tab:blue", label=f"mean of {k}")
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        png.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(png)
        plt.close(fig)


class MetricLog:
    """Evaluation figures against training progress (step, images seen, seconds, then named figures), as CSV."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def rows(self) -> list[dict]:
        if not self.path.is_file():
            return []
        with self.path.open() as f:
            return [{k: float(v) if k != "step" else int(v) for k, v in r.items()} for r in csv.DictReader(f)]

    def truncate_after(self, step: int) -> None:
        rows = [r for r in self.rows() if r["step"] <= step]
        if self.path.is_file():
            self.path.unlink()
        for r in rows:
            self.append(r["step"], int(r["images_seen"]), r["seconds"],
                        {k: v for k, v in r.items() if k not in ("step", "images_seen", "seconds")})

    def append(self, step: int, images_seen: int, seconds: float, figures: dict) -> None:
        append_csv_row(self.path, ["step", "images_seen", "seconds", *figures],
                       [step, images_seen, f"{seconds:.1f}", *(f"{v:.6g}" for v in figures.values())])


def autocast(device: torch.device, precision: str):
    """bf16 autocast where asked (it pays only on CPUs with native bf16 and on GPUs: measure first), else a no-op."""
    if precision not in ("fp32", "bf16"):
        raise ValueError(f"precision must be 'fp32' or 'bf16', not {precision!r}")
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


class Timer:
    def __init__(self, already: float = 0.0):
        self.start = time.perf_counter() - already

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.start
