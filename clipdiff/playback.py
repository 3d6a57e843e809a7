"""A recorded sampling run, played back: frames side by side, where guidance acts, when the image commits to its
prompt, GIF.

The sampler records StepRecords (uint8 frames and per-pixel maps of the guidance) as it goes; everything here reads those
records and never runs the U-Net again, so scrubbing through a run costs nothing but a picture. The one
extra model call, done once per run, is the CLIP image encoder over every recorded guided x0: the cosine
between that embedding and the run's conditioning embedding says at which timestep the picture starts to
look like the prompt to CLIP.

A run that debugs a prompt says so: a sample guided away from a negative prompt shows that prompt's x0 where the
unconditional one would be, a sample whose prompt switched part way marks the switch, and the cosines to the
negative prompt (or to the first prompt of a switch) can be drawn beside the cosine to the prompt.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from matplotlib import colormaps
from PIL import Image

from .encoders import ClipEncoder
from .images import labelled_grid
from .pipeline import PreparedRun
from .sampling import StepRecord, from_uint8, switch_step
from .similarity import unit

PANELS = ("x_t", "x0 (guided)", "x0 (conditional)", "x0 (unconditional)")
NEGATIVE_PANEL = "negative x0"      # the unconditional panel's name when a negative prompt took the null's place
GAP_PANEL = "|eps_c - eps_u|"
NEGATIVE_GAP_PANEL = "|eps_c - eps_neg|"
GUIDANCE_PANEL = "guidance |w (eps_c - eps_u)|"
NEGATIVE_GUIDANCE_PANEL = "guidance |w (eps_c - eps_neg)|"
HEAT_COLORMAP = "inferno"           # black at 0: a w = 0 run's guidance map is black
HEAT_PERCENTILE = 99                # the heat maps' brightest colour: this percentile of an image's values


@dataclass
class PlaybackRun:
    """One finished run: its labels, its recorded steps and the series derived from them once."""
    labels: list[str]                              # one per sample, e.g. the prompt and seed
    records: list[StepRecord] = field(default_factory=list)
    cosines: np.ndarray | None = None              # (R, N) condition vs CLIP embedding of the guided x0
    negative: list[bool] = field(default_factory=list)          # per sample: guided away from a negative prompt
    switch_timesteps: list[int | None] = field(default_factory=list)   # per sample: first timestep on prompt B
    references: dict[str, torch.Tensor] = field(default_factory=dict)  # name -> (N, D) more embeddings to compare
    extra_cosines: dict[str, np.ndarray] = field(default_factory=dict)  # name -> (R, N), NaN where a sample has none

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
        self.extra_cosines = {}

    def has_negative(self, sample: int) -> bool:
        return sample < len(self.negative) and self.negative[sample]

    def panels(self, sample: int) -> list[str]:
        """The frame's panels, left to right: the four pictures, then the two heat maps."""
        if self.has_negative(sample):
            return [*PANELS[:3], NEGATIVE_PANEL, NEGATIVE_GAP_PANEL, NEGATIVE_GUIDANCE_PANEL]
        return [*PANELS, GAP_PANEL, GUIDANCE_PANEL]

    def switch_timestep(self, sample: int) -> int | None:
        return self.switch_timesteps[sample] if sample < len(self.switch_timesteps) else None

    def guidance_means(self, sample: int) -> dict[str, np.ndarray]:
        """The two heat maps of one sample, each averaged over its pixels, per recorded step: how much the prompt
        changes the noise prediction, and how much of that guidance adds."""
        gap, guidance = self.panels(sample)[4:]
        return {name: np.array([getattr(r, attr)[sample].astype(np.float32).mean() for r in self.records])
                for name, attr in ((gap, "eps_gap"), (guidance, "guidance"))}

    def heat_scale(self, sample: int) -> float:
        """The heat maps' top colour, one for every recorded step of the sample and both its maps, so that steps
        can be compared: the 99th percentile of all their values (a few speckles in the last steps would otherwise
        leave every earlier map black). 0 when the maps are zero (almost) everywhere."""
        if not self.records:
            return 0.0
        values = np.stack([getattr(r, attr)[sample] for r in self.records for attr in ("eps_gap", "guidance")])
        return float(np.percentile(values.astype(np.float32), HEAT_PERCENTILE))

    def opening_step(self) -> int:
        """The recorded step (0-based) worth opening on: a third of the way in, where the layout is set but the
        guided, conditional and unconditional guesses still differ. (Where the guided and unconditional x0 differ
        most was tried: on the shipped models that is the first step, whose x_t is pure noise.)"""
        return round((len(self.records) - 1) / 3) if self.records else 0

    def frame(self, step: int, sample: int, cell: int = 128) -> Image.Image:
        """x_t, guided x0, conditional x0 and unconditional x0 of one sample at one recorded step, then its two heat
        maps (|eps_c - eps_u| and the guidance term), side by side."""
        record = self.records[step]
        scale = self.heat_scale(sample)
        panels = np.stack([record.x_t[sample], record.x0[sample], record.x0_cond[sample], record.x0_uncond[sample],
                           heat_map(record.eps_gap[sample], scale), heat_map(record.guidance[sample], scale)])
        return labelled_grid(panels, rows=1, cols=len(panels), col_labels=self.panels(sample), cell=cell)


def heat_map(values: np.ndarray, scale: float) -> np.ndarray:
    """(H, W) values >= 0 -> (H, W, 3) uint8 in HEAT_COLORMAP, 0 black and `scale` the brightest; all black when
    scale is 0 (nothing to show)."""
    level = np.clip(values.astype(np.float32) / scale, 0, 1) if scale > 0 else np.zeros(values.shape, np.float32)
    return (colormaps[HEAT_COLORMAP](level)[..., :3] * 255).round().astype(np.uint8)


def prompt_x0_cosines(encoder: ClipEncoder, records: list[StepRecord], conditions: torch.Tensor) -> np.ndarray:
    """(R, N): cosine between each sample's conditioning embedding and the CLIP image embedding of its guided x0."""
    return x0_cosines(encoder, records, {"prompt": conditions})["prompt"]


def x0_cosines(encoder: ClipEncoder, records: list[StepRecord], embeddings: dict[str, torch.Tensor]) -> dict:
    """name -> (R, N): the cosines of each sample's guided x0 (one CLIP image pass for all) to each (N, D) set of
    embeddings; NaN where a sample's row is NaN (it has no such embedding)."""
    n = len(next(iter(embeddings.values())))
    if not records:
        return {name: np.zeros((0, n), dtype=np.float32) for name in embeddings}
    frames = np.concatenate([r.x0 for r in records])                # (R * N, H, W, 3), record-major
    image_emb = unit(encoder.encode_image(from_uint8(frames)).reshape(len(records), n, -1))
    return {name: (image_emb * unit(e).unsqueeze(0)).sum(-1).numpy() for name, e in embeddings.items()}


def playback_cosines(encoder: ClipEncoder, run: PlaybackRun, conditions: torch.Tensor) -> None:
    """Fill the run's cosines to its conditions, and to its references (negative prompts, first prompts)."""
    found = x0_cosines(encoder, run.records, {"prompt": conditions, **run.references})
    run.cosines = found.pop("prompt")
    run.extra_cosines = found


def switch_timesteps(records: list[StepRecord], fractions: list[float]) -> list[int | None]:
    """Per sample: the timestep of the first step conditioned on the second prompt (None: it never switched), for
    a run whose last step is recorded."""
    if not records:
        return [None] * len(fractions)
    total = records[-1].step + 1
    marks = []
    for f in fractions:
        first = switch_step(f, total)
        later = [r.timestep for r in records if r.step >= first]
        marks.append(later[0] if first < total and later else None)
    return marks


def make_playback(encoder: ClipEncoder, labels: list[str], records: list[StepRecord],
                  conditions: torch.Tensor) -> PlaybackRun:
    """conditions: the raw CLIP embeddings (N, D) the samples were conditioned on."""
    return PlaybackRun(labels, list(records), prompt_x0_cosines(encoder, records, conditions))


def playback_of_run(run: PreparedRun, labels: list[str], records: list[StepRecord]) -> PlaybackRun:
    """A prepared run's recorded steps as a PlaybackRun that knows each sample's negative prompt and switch: the
    negative panel, the switch's timestep, and the embeddings to draw cosines to ("negative prompt", "first
    prompt"; NaN rows for the samples without one)."""
    playback = PlaybackRun(labels, list(records))
    negatives = [j.negative.strip() for j in run.jobs]
    if any(negatives):
        playback.negative = [bool(text) for text in negatives]
        given = next(text for text in negatives if text)      # a stand-in for the rows without one: NaN below
        playback.references["negative prompt"] = _rows(run.text_embeddings([t or given for t in negatives]),
                                                       playback.negative)
    switching = [j.switches for j in run.jobs]
    if any(switching):
        playback.switch_timesteps = switch_timesteps(records, [j.switch_at if j.switches else 1.0 for j in run.jobs])
        playback.references["first prompt"] = _rows(run.inputs.cond, switching)
    return playback


def _rows(embeddings: torch.Tensor, keep: list[bool]) -> torch.Tensor:
    """The rows where keep, NaN elsewhere."""
    return torch.where(torch.tensor(keep).unsqueeze(1), embeddings, torch.full_like(embeddings, float("nan")))


def export_gif(run: PlaybackRun, sample: int, path: str | Path, frame_ms: int = 150, cell: int = 96) -> Path:
    """The run of one sample as an animated GIF (the frames as the tab shows them, heat maps included), holding the
    last frame a little longer."""
    if not run.records:
        raise ValueError("this run has no recorded steps to export")
    frames = [run.frame(i, sample, cell).convert("P", palette=Image.Palette.ADAPTIVE)
              for i in range(len(run.records))]
    durations = [frame_ms] * (len(frames) - 1) + [frame_ms * 8]
    path = Path(path)
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=durations, loop=0)
    return path
