"""Text (or image) -> CLIP embedding -> guided sampling: the encoder, the U-Net and the sampler together.

A run is a list of Jobs, one per image: what conditions it (a prompt, or an embedding), its guidance
weight and its seed, and optionally what guidance pushes away from (a negative prompt) and a second prompt that
takes over part way (prompt editing). Layout helpers build the usual lists: n images per prompt, or prompts x w
with one seed (the guidance sweep).
"""
from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterator

import torch

from . import __version__
from .checkpoints import DEFAULT_UNET_DIR, WEIGHTS_NAME
from .diffusion import DiffusionConfig, check_compatible, condition, load_diffusion
from .encoders import ClipEncoder
from .prompts import edit_text, parse
from .runtimes import runtime_of, with_runtime
from .devices import resolve_device
from .sampling import DEFAULT_SAMPLER, DEFAULT_STEPS, Progress, SampleResult, Switch, run_to_end, sample_guided
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
    negative: str = ""                # guidance pushes away from this prompt instead of the learned null ("": null)
    switch_to: str | None = None      # prompt editing: this prompt conditions the steps from switch_at on
    switch_at: float = 1.0            # fraction of the steps conditioned on `prompt` (1: never switches)

    @property
    def switches(self) -> bool:
        return self.switch_to is not None

    @property
    def text(self) -> str:
        """The prompt as the attendee wrote it: a switch as [from:to:when] where it can be written so."""
        if not self.switches:
            return self.prompt
        return edit_text(self.prompt, self.switch_to, self.switch_at) or \
            f"{self.prompt} -> {self.switch_to} at {self.switch_at:g}"


def with_prompt_edit(job: Job, steps: int) -> Job:
    """The job with the [from:to:when] in its prompt (if any) as a switch; raises prompts.PromptSyntaxError for
    brackets that do not parse."""
    edit = parse(job.prompt)
    if not edit.switches:
        return job
    return replace(job, prompt=edit.before, switch_to=edit.after, switch_at=edit.fraction(steps))


def images_per_prompt(prompts: list[str], w: float, seed: int, n: int, negative: str = "") -> list[Job]:
    """n images per prompt; image k of each prompt uses seed + k."""
    return [Job(p, w, seed + k, negative=negative) for p in prompts for k in range(n)]


def sweep(prompts: list[str], ws: list[float], seed: int, negative: str = "") -> list[Job]:
    """Rows = w, columns = prompts, every cell from the same seed: only w and the prompt change."""
    return [Job(p, w, seed, negative=negative) for w in ws for p in prompts]


def prompt_edits(a: str, b: str, fractions: list[float], w: float, seed: int) -> list[Job]:
    """One image per switch fraction, all from one seed: prompt a for the first f of the steps, then prompt b
    (f = 0: b alone, f = 1: a alone)."""
    return [Job(a, w, seed, switch_to=b, switch_at=f) for f in fractions]


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
             device: str = "auto", runtime: str | None = None, precision: str = "fp32") -> "ClipDiffusionPipeline":
        """runtime: where the U-Net's forward runs (clipdiff.runtimes; None: the default for the device);
        raises runtimes.RuntimeUnavailable for one that cannot run here."""
        device = resolve_device(device)
        encoder = ClipEncoder.load(clip, clip_pretrained, device)
        model, config = load_diffusion(unet_dir, device)
        return cls(encoder, with_runtime(model, runtime, precision), config, model_id_of(Path(unet_dir)))

    @property
    def image_size(self) -> int:
        return self.config.unet.image_size

    def conditions(self, jobs: list[Job]) -> torch.Tensor:
        texts = [j.prompt for j in jobs if j.embedding is None]
        text_emb = iter(self.encoder.encode_text(texts)) if texts else iter(())
        raw = torch.stack([j.embedding.float() if j.embedding is not None else next(text_emb) for j in jobs])
        return condition(raw, self.config.embedding_norm)

    def text_conditions(self, texts: list[str]) -> torch.Tensor:
        return condition(self.encoder.encode_text(texts), self.config.embedding_norm)

    def negative_conditions(self, jobs: list[Job]) -> torch.Tensor | None:
        """(N, D) conditions of the unconditional half: each negative prompt's, the learned null where a job has
        none; None when no job has one (the sampler's own null: runs without negatives stay bit-identical)."""
        negatives = [j.negative.strip() for j in jobs]
        if not any(negatives):
            return None
        null = self.model.null_condition(len(jobs)).detach().float().cpu().clone()
        given = [k for k, text in enumerate(negatives) if text]
        null[given] = self.text_conditions([negatives[k] for k in given])
        return null

    def switch(self, jobs: list[Job]) -> Switch | None:
        """Prompt editing: the conditions each job switches to (its own where it never switches), and when."""
        if not any(j.switches for j in jobs):
            return None
        cond = self.conditions(jobs)
        switching = [k for k, j in enumerate(jobs) if j.switches]
        cond[switching] = self.text_conditions([jobs[k].switch_to for k in switching])
        return Switch(cond, tuple(float(j.switch_at) if j.switches else 1.0 for j in jobs))

    def final_conditions(self, jobs: list[Job]) -> torch.Tensor:
        """(N, D) the conditions each job ends on: what its image is scored against."""
        switch = self.switch(jobs)
        if switch is None:
            return self.conditions(jobs)
        first = self.conditions(jobs)
        ends = torch.tensor([f < 1 for f in switch.at]).unsqueeze(1)
        return torch.where(ends, switch.cond, first)

    def run(self, jobs: list[Job], steps: int = DEFAULT_STEPS, sampler: str = DEFAULT_SAMPLER,
            record_every: int = 0) -> Iterator[Progress]:
        """Sample every job in one batch; yields after each step (see sampling.sample_guided)."""
        cond = self.conditions(jobs)
        w = torch.tensor([j.w for j in jobs], dtype=torch.float32)
        yield from sample_guided(self.model, cond, w, [j.seed for j in jobs], sampler=sampler, steps=steps,
                                 schedule=self.config.schedule, record_every=record_every,
                                 uncond=self.negative_conditions(jobs), switch=self.switch(jobs))

    def generate(self, jobs: list[Job], steps: int = DEFAULT_STEPS, sampler: str = DEFAULT_SAMPLER,
                 record_every: int = 0) -> SampleResult:
        return run_to_end(self.run(jobs, steps, sampler, record_every))

    def parameters_of(self, job: Job, steps: int, sampler: str) -> dict:
        """What a generated image carries with it: enough to make it again."""
        params = {"prompt": job.prompt, "w": job.w, "seed": job.seed, "steps": steps, "sampler": sampler,
                  "model": self.model_id, "clip": self.encoder.identity, "conditioned_on":
                      "text" if job.embedding is None else "embedding", "clipdiff": __version__,
                  "runtime": runtime_of(self.model).label}
        if job.negative.strip():     # only when used: a PNG without them is what it was before
            params["negative_prompt"] = job.negative.strip()
        if job.switches:
            params.update(switch_to=job.switch_to, switch_at=job.switch_at)
        return params


def model_id_of(folder: Path) -> str:
    """Folder name plus the first hex digits of the weights' hash: names exactly which weights made an image."""
    digest = hashlib.sha256((folder / WEIGHTS_NAME).read_bytes()).hexdigest()[:10]
    return f"{folder.name}-{digest}"
