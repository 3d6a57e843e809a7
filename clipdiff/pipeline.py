"""Text (or image) -> CLIP embedding -> guided sampling: the encoder, the U-Net and the sampler together.

A run is a list of Jobs, one per image: what conditions it (a prompt, or an embedding), its guidance
weight and its seed. Layout helpers build the usual lists: n images per prompt, or prompts x w with one
seed (the guidance sweep).
"""
from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import torch

from . import __version__
from .checkpoints import DEFAULT_UNET_DIR, WEIGHTS_NAME
from .diffusion import DiffusionConfig, check_compatible, condition, load_diffusion
from .encoders import ClipEncoder
from .devices import resolve_device
from .sampling import DEFAULT_SAMPLER, DEFAULT_STEPS, Progress, SampleResult, run_to_end, sample_guided
from .unet import ConditionalUNet

REFERENCE_PROMPTS = (
    "A round white daisy with a yellow center",
    "An orange sunflower with a big brown center",
    "A deep red rose flower",
)
REFERENCE_WS = (-2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0)


@dataclass
class Job:
    """One image to make."""
    prompt: str                       # the text shown with the image (a label when embedding is given)
    w: float
    seed: int
    embedding: torch.Tensor | None = field(default=None, repr=False)  # raw CLIP embedding instead of prompt


def images_per_prompt(prompts: list[str], w: float, seed: int, n: int) -> list[Job]:
    """n images per prompt; image k of each prompt uses seed + k."""
    return [Job(p, w, seed + k) for p in prompts for k in range(n)]


def sweep(prompts: list[str], ws: list[float], seed: int) -> list[Job]:
    """Rows = w, columns = prompts, every cell from the same seed: only w and the prompt change."""
    return [Job(p, w, seed) for w in ws for p in prompts]


class ClipDiffusionPipeline:
    def __init__(self, encoder: ClipEncoder, model: ConditionalUNet, config: DiffusionConfig, model_id: str):
        check_compatible(config, encoder.identity, encoder.embed_dim, model_id)
        if encoder.identity != config.clip_identity:
            warnings.warn(f"the diffusion model was trained with {config.clip_identity}, "
                          f"not {encoder.identity}: its images may not follow prompts")
        self.encoder = encoder
        self.model = model.eval().to(encoder.device)
        self.config = config
        self.model_id = model_id

    @classmethod
    def load(cls, unet_dir: str | Path = DEFAULT_UNET_DIR, clip: str = "default", clip_pretrained: str | None = None,
             device: str = "auto") -> "ClipDiffusionPipeline":
        device = resolve_device(device)
        encoder = ClipEncoder.load(clip, clip_pretrained, device)
        model, config = load_diffusion(unet_dir, device)
        return cls(encoder, model, config, model_id_of(Path(unet_dir)))

    @property
    def image_size(self) -> int:
        return self.config.unet.image_size

    def conditions(self, jobs: list[Job]) -> torch.Tensor:
        texts = [j.prompt for j in jobs if j.embedding is None]
        text_emb = iter(self.encoder.encode_text(texts)) if texts else iter(())
        raw = torch.stack([j.embedding.float() if j.embedding is not None else next(text_emb) for j in jobs])
        return condition(raw, self.config.embedding_norm)

    def run(self, jobs: list[Job], steps: int = DEFAULT_STEPS, sampler: str = DEFAULT_SAMPLER,
            record_every: int = 0) -> Iterator[Progress]:
        """Sample every job in one batch; yields after each step (see sampling.sample_guided)."""
        cond = self.conditions(jobs)
        w = torch.tensor([j.w for j in jobs], dtype=torch.float32)
        yield from sample_guided(self.model, cond, w, [j.seed for j in jobs], sampler=sampler, steps=steps,
                                 schedule=self.config.schedule, record_every=record_every)

    def generate(self, jobs: list[Job], steps: int = DEFAULT_STEPS, sampler: str = DEFAULT_SAMPLER,
                 record_every: int = 0) -> SampleResult:
        return run_to_end(self.run(jobs, steps, sampler, record_every))

    def parameters_of(self, job: Job, steps: int, sampler: str) -> dict:
        """What a generated image carries with it: enough to make it again."""
        return {"prompt": job.prompt, "w": job.w, "seed": job.seed, "steps": steps, "sampler": sampler,
                "model": self.model_id, "clip": self.encoder.identity, "conditioned_on":
                    "text" if job.embedding is None else "embedding", "clipdiff": __version__}


def model_id_of(folder: Path) -> str:
    """Folder name plus the first hex digits of the weights' hash: names exactly which weights made an image."""
    digest = hashlib.sha256((folder / WEIGHTS_NAME).read_bytes()).hexdigest()[:10]
    return f"{folder.name}-{digest}"
