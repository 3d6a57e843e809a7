"""A recorded sampling run, played back: frames side by side, when the image commits to its prompt, noise norms, GIF.

The sampler records StepRecords (uint8 frames and noise norms) as it goes; everything here reads those
records and never runs the U-Net again, so scrubbing through a run costs nothing but a picture. The one
extra model call, done once per run, is the CLIP image encoder over every recorded guided x0: the cosine
between that embedding and the run's conditioning embedding says at which timestep the picture starts to
look like the prompt to CLIP.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .encoders import ClipEncoder
from .images import labelled_grid
from .sampling import StepRecord, from_uint8
from .similarity import unit

PANELS = ("x_t", "x0 (guided)", "x0 (conditional)", "x0 (unconditional)")
NORM_SERIES = {"conditional": "eps_cond_norm", "unconditional": "eps_uncond_norm", "guided": "eps_guided_norm"}


@dataclass
class PlaybackRun:
    """One finished run: its labels, its recorded steps and the series derived from them once."""
    labels: list[str]                              # one per sample, e.g. the prompt and seed
    records: list[StepRecord] = field(default_factory=list)
    cosines: np.ndarray | None = None              # (R, N) condition vs CLIP embedding of the guided x0

    @property
    def num_samples(self) -> int:
        return len(self.labels)

    @property
    def timesteps(self) -> list[int]:
        return [r.timestep for r in self.records]

    @property
    def nbytes(self) -> int:
        return sum(r.nbytes for r in self.records)

    def release(self) -> None:
        """Drop the frames (called when a session's state expires), so the memory goes back at once."""
        self.records.clear()
        self.cosines = None

    def noise_norms(self, sample: int) -> dict[str, np.ndarray]:
        """RMS of the conditional, unconditional and guided noise predictions of one sample, per recorded step."""
        return {name: np.array([getattr(r, attr)[sample] for r in self.records], dtype=np.float32)
                for name, attr in NORM_SERIES.items()}

    def frame(self, step: int, sample: int, cell: int = 128) -> Image.Image:
        """x_t, guided x0, conditional x0 and unconditional x0 of one sample at one recorded step, side by side."""
        record = self.records[step]
        panels = np.stack([record.x_t[sample], record.x0[sample], record.x0_cond[sample], record.x0_uncond[sample]])
        return labelled_grid(panels, rows=1, cols=len(PANELS), col_labels=list(PANELS), cell=cell)


def prompt_x0_cosines(encoder: ClipEncoder, records: list[StepRecord], conditions: torch.Tensor) -> np.ndarray:
    """(R, N): cosine between each sample's conditioning embedding and the CLIP image embedding of its guided x0."""
    if not records:
        return np.zeros((0, len(conditions)), dtype=np.float32)
    frames = np.concatenate([r.x0 for r in records])                # (R * N, H, W, 3), record-major
    image_emb = encoder.encode_image(from_uint8(frames)).reshape(len(records), len(conditions), -1)
    return (unit(image_emb) * unit(conditions).unsqueeze(0)).sum(-1).numpy()


def make_playback(encoder: ClipEncoder, labels: list[str], records: list[StepRecord],
                  conditions: torch.Tensor) -> PlaybackRun:
    """conditions: the raw CLIP embeddings (N, D) the samples were conditioned on."""
    return PlaybackRun(labels, list(records), prompt_x0_cosines(encoder, records, conditions))


def export_gif(run: PlaybackRun, sample: int, path: str | Path, frame_ms: int = 150, cell: int = 96) -> Path:
    """The run of one sample as an animated GIF, holding the last frame a little longer."""
    if not run.records:
        raise ValueError("this run has no recorded steps to export")
    frames = [run.frame(i, sample, cell).convert("P", palette=Image.Palette.ADAPTIVE)
              for i in range(len(run.records))]
    durations = [frame_ms] * (len(frames) - 1) + [frame_ms * 8]
    path = Path(path)
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=durations, loop=0)
    return path
