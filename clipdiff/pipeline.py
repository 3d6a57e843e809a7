"""Text (or image) -> CLIP embedding -> guided sampling: the encoder, the U-Net and the sampler together.

A run is a list of Jobs, one per image: what conditions it (a prompt, or an embedding), its guidance
weight and its seed, and optionally what guidance pushes away from (a negative prompt) and a second prompt that
takes over part way (prompt editing). Layout helpers build the usual lists: n images per prompt, or prompts x w
with one seed (the guidance sweep). `prepare` turns the jobs into a PreparedRun once (as diffusers' pipelines
prepare their prompt embeddings and latents before the loop), and everything after reads that value.
"""
from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterator

import torch

from . import __version__
from .checkpoints import DEFAULT_UNET_DIR, WEIGHTS_NAME, CheckpointError
from .diffusion import DiffusionConfig, check_compatible, condition, load_diffusion
from .encoders import ClipEncoder
from .fast import TRAIN_HINT as FAST_TRAIN_HINT
from .fast import FastConfig, FastStudent, load_fast, needs_teacher, stepper_for, w_outside
from .prompts import PromptEdit, edit_text, parse
from .runtimes import runtime_of, with_runtime
from .devices import resolve_device
from .sampling import (DEFAULT_SAMPLER, DEFAULT_STEPS, Progress, SampleResult, SamplerInputs, Start, Switch,
                       drive, run_to_end, seeds_from)
from .schedulers import sampler_spec
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
    prompt: str                       # as written, a [from:to:when] included (a label when embedding is given);
                                      # in a PreparedRun's jobs, the text before the switch
    w: float
    seed: int
    embedding: torch.Tensor | None = field(default=None, repr=False)  # raw CLIP embedding instead of prompt
    negative: str = ""                # guidance pushes away from this prompt instead of the learned null ("": null)
    switch_to: str | None = None      # prompt editing: this prompt conditions the steps from switch_at on
    switch_at: float = 1.0            # fraction of the steps conditioned on `prompt` (1: never switches)
    photo: torch.Tensor | None = field(default=None, repr=False)  # SDEdit: (C, H, W) in [-1, 1] to start from ...
    photo_at: float = 1.0             # ... noised to this fraction of T (1: from noise alone, 0: the photo as it is)

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


def _with_switch(job: Job, edit: PromptEdit | None, steps: int) -> Job:
    """The job as it runs: a [from:to:when] in its prompt as its switch (prompt: the text before it)."""
    if edit is None or not edit.switches:
        return job
    return replace(job, prompt=edit.before, switch_to=edit.after, switch_at=edit.fraction(steps))


@dataclass(frozen=True)
class PreparedRun:
    """A run's inputs, built once by ClipDiffusionPipeline.prepare: the local run, a served request, the CLIP
    scores, playback and the session's last run all read this one value."""
    jobs: tuple[Job, ...]                 # as they run: a [from:to:when] is the job's switch, its prompt the first text
    inputs: SamplerInputs                 # what the sampler takes: conditions, w, seeds, steps, negatives, switch
    edits: tuple[PromptEdit | None, ...]  # each job's prompt as parsed (None: it came with its switch, or embedding)
    embeddings: dict[str, torch.Tensor] = field(repr=False)   # each distinct text of the run -> its raw CLIP embedding

    @property
    def steps(self) -> int:
        return self.inputs.steps

    @property
    def sampler(self) -> str:
        return self.inputs.sampler

    @property
    def ws(self) -> list[float]:
        """Each image's w: the run's one home for it."""
        return self.inputs.w.tolist()

    @property
    def final(self) -> torch.Tensor:
        """(N, D) the conditions each job ends on: what its image is scored against."""
        return self.inputs.final

    def text_embeddings(self, texts: list[str]) -> torch.Tensor:
        """(len(texts), D) raw CLIP embeddings of texts of this run (its prompts, negatives, prompts switched to)."""
        return torch.stack([self.embeddings[t] for t in texts])


def images_per_prompt(prompts: list[str], w: float, seed: int, n: int, negative: str = "") -> list[Job]:
    """n images per prompt; image k of each prompt uses seed + k (wrapping past the last seed: sampling.seeds_from)."""
    return [Job(p, w, s, negative=negative) for p in prompts for s in seeds_from(seed, n)]


def sweep(prompts: list[str], ws: list[float], seed: int, negative: str = "") -> list[Job]:
    """Rows = w, columns = prompts, every cell from the same seed: only w and the prompt change."""
    return [Job(p, w, seed, negative=negative) for w in ws for p in prompts]


def photo_edits(photo: torch.Tensor, prompt: str, w: float, seed: int, at: float, negative: str = "") -> list[Job]:
    """SDEdit: the photo (C, H, W) noised to `at` of the way to pure noise, then denoised towards the prompt."""
    return [Job(prompt, w, seed, negative=negative, photo=photo, photo_at=at)]


def prompt_edits(a: str, b: str, fractions: list[float], w: float, seed: int) -> list[Job]:
    """One image per switch fraction, all from one seed: prompt a for the first f of the steps, then prompt b
    (f = 0: b alone, f = 1: a alone)."""
    return [Job(a, w, seed, switch_to=b, switch_at=f) for f in fractions]


def start_of(jobs) -> Start | None:
    """SDEdit: the photos the jobs start from (one start for the batch: every job edits a photo, at one fraction), or
    None when none does."""
    photos = [j.photo for j in jobs if j.photo is not None]
    if not photos:
        return None
    if len(photos) != len(jobs) or len({j.photo_at for j in jobs}) != 1:
        raise ValueError("a run edits a photo in every job at one start, or in none")
    return Start(torch.stack([p.float() for p in photos]), float(jobs[0].photo_at))


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
        # The fast mode (opt-in, with_student): the distilled student, its config and id; without one, why not.
        self.student: FastStudent | None = None
        self.student_config: FastConfig | None = None
        self.student_id: str | None = None
        self.student_problem = f"The fast mode is not loaded (it is opt-in: app.py --fast); {FAST_TRAIN_HINT}."

    def with_student(self, folder: str | Path, runtime: str | None = None,
                     precision: str = "fp32") -> "ClipDiffusionPipeline":
        """Load the fast mode's student from folder (on the teacher's runtime): refused with a CheckpointError when
        it is missing, or was distilled from another teacher than this pipeline's."""
        folder = Path(folder)
        student, config = load_fast(folder, self.encoder.device)
        if config.teacher != self.model_id:
            raise CheckpointError(f"the fast-mode student in {folder} was distilled from {config.teacher}, not from "
                                  f"the loaded U-Net {self.model_id}; {FAST_TRAIN_HINT} again")
        return self.use_student(with_runtime(student, runtime, precision), config, model_id_of(folder))

    def use_student(self, student: FastStudent, config: FastConfig, student_id: str) -> "ClipDiffusionPipeline":
        """Sample the fast sampler's runs with this student (a loaded one, or one in training)."""
        self.student, self.student_config, self.student_id = student, config, student_id
        return self

    def fast_problems(self, run: "PreparedRun") -> list[str]:
        """Why this prepared run cannot go to the fast mode, in words (empty: it can, or it is not a fast run)."""
        if not sampler_spec(run.sampler).student:
            return []
        if self.student is None:
            return [self.student_problem]
        found = [problem] if (problem := w_outside(self.student_config, [j.w for j in run.jobs])) else []
        if any(j.negative.strip() for j in run.jobs):
            found.append(needs_teacher("A negative prompt"))
        if any(j.switches for j in run.jobs):
            found.append(needs_teacher("Prompt editing ([from:to:when])"))
        if any(j.photo is not None for j in run.jobs):
            found.append(needs_teacher("Editing a photo"))
        return found

    def stepper(self, inputs: SamplerInputs, record_every: int = 0):
        """The run that samples these inputs and the model that answers its steps (fast.stepper_for decides: the
        teacher's guided run, or for the fast sampler the student's)."""
        return stepper_for(inputs, record_every, self.model, self.config.schedule, self.student, self.student_config,
                           self.student_problem)

    @classmethod
    def load(cls, unet_dir: str | Path = DEFAULT_UNET_DIR, clip: str = "default", clip_pretrained: str | None = None,
             device: str = "auto", runtime: str | None = None, precision: str = "fp32",
             fast: str | Path | None = None) -> "ClipDiffusionPipeline":
        """runtime: where the U-Net's forward runs (clipdiff.runtimes; None: the default for the device);
        raises runtimes.RuntimeUnavailable for one that cannot run here. fast: the fast mode's student folder (None:
        no fast mode); a missing or mismatched one raises CheckpointError."""
        device = resolve_device(device)
        encoder = ClipEncoder.load(clip, clip_pretrained, device)
        model, config = load_diffusion(unet_dir, device)
        pipe = cls(encoder, with_runtime(model, runtime, precision), config, model_id_of(Path(unet_dir)))
        return pipe if fast is None else pipe.with_student(fast, runtime, precision)

    @property
    def image_size(self) -> int:
        return self.config.unet.image_size

    def prepare(self, jobs: list[Job], steps: int = DEFAULT_STEPS, sampler: str = DEFAULT_SAMPLER) -> PreparedRun:
        """The run's inputs, built once: each prompt parsed (a [from:to:when] becomes the job's switch, its when a
        fraction of these steps), each distinct text encoded once (prompts, then negatives, then the prompts switched
        to, each group in one batch), and from those the conditions, the negatives' (the learned null where a job has
        none), the switch, w and seeds. Raises prompts.PromptSyntaxError (its `prompt` says which) for brackets that
        do not parse, before anything is encoded."""
        edits = {}
        for job in jobs:
            if not job.switches and job.embedding is None and job.prompt not in edits:
                edits[job.prompt] = parse(job.prompt)
        parsed = tuple(None if j.switches else edits.get(j.prompt) for j in jobs)
        jobs = tuple(_with_switch(j, edit, steps) for j, edit in zip(jobs, parsed))
        embeddings: dict[str, torch.Tensor] = {}
        self._embed(embeddings, [j.prompt for j in jobs if j.embedding is None])
        negatives = [j.negative.strip() for j in jobs]
        self._embed(embeddings, [text for text in negatives if text])
        self._embed(embeddings, [j.switch_to for j in jobs if j.switches])
        cond = self._condition([j.embedding.float() if j.embedding is not None else embeddings[j.prompt]
                                for j in jobs])
        uncond = None      # None: the sampler's own null, so runs without negatives stay bit-identical
        if any(negatives):
            uncond = self.model.null_condition(len(jobs)).detach().float().cpu().clone()
            given = [k for k, text in enumerate(negatives) if text]
            uncond[given] = self._condition([embeddings[negatives[k]] for k in given])
        switch = None
        if any(j.switches for j in jobs):
            after = cond.clone()
            switching = [k for k, j in enumerate(jobs) if j.switches]
            after[switching] = self._condition([embeddings[jobs[k].switch_to] for k in switching])
            switch = Switch(after, tuple(float(j.switch_at) if j.switches else 1.0 for j in jobs))
        inputs = SamplerInputs(cond, torch.tensor([j.w for j in jobs], dtype=torch.float32),
                               tuple(int(j.seed) for j in jobs), int(steps), sampler, uncond, switch, start_of(jobs))
        return PreparedRun(jobs, inputs, parsed, embeddings)

    def _embed(self, embeddings: dict[str, torch.Tensor], texts: list[str]) -> None:
        new = [t for t in dict.fromkeys(texts) if t not in embeddings]
        if new:
            embeddings.update(zip(new, self.encoder.encode_text(new)))

    def _condition(self, raw: list[torch.Tensor]) -> torch.Tensor:
        return condition(torch.stack(raw), self.config.embedding_norm)

    def sample(self, run: PreparedRun, record_every: int = 0) -> Iterator[Progress]:
        """Sample a prepared run's jobs in one batch; yields after each step (see sampling.sample_guided)."""
        return drive(*self.stepper(run.inputs, record_every))

    def run(self, jobs: list[Job], steps: int = DEFAULT_STEPS, sampler: str = DEFAULT_SAMPLER,
            record_every: int = 0) -> Iterator[Progress]:
        """prepare, then sample: what a script that needs no more than the images calls."""
        yield from self.sample(self.prepare(jobs, steps, sampler), record_every)

    def generate(self, jobs: list[Job], steps: int = DEFAULT_STEPS, sampler: str = DEFAULT_SAMPLER,
                 record_every: int = 0) -> SampleResult:
        return run_to_end(self.run(jobs, steps, sampler, record_every))

    def parameters_of(self, job: Job, steps: int, sampler: str) -> dict:
        """What a generated image carries with it: enough to make it again."""
        fast = sampler_spec(sampler).student and self.student is not None
        params = {"prompt": job.prompt, "w": job.w, "seed": job.seed, "steps": steps, "sampler": sampler,
                  "model": self.student_id if fast else self.model_id, "clip": self.encoder.identity,
                  "conditioned_on": "text" if job.embedding is None else "embedding", "clipdiff": __version__,
                  "runtime": runtime_of(self.student if fast else self.model).label}
        if fast:      # the student's weights made it; the teacher it learned from is named beside them
            params["distilled_from"] = self.model_id
        if job.negative.strip():     # only when used: a PNG without them is what it was before
            params["negative_prompt"] = job.negative.strip()
        if job.switches:
            params.update(switch_to=job.switch_to, switch_at=job.switch_at)
        if job.photo is not None:    # an edit: the photo itself is not carried, so the PNG alone cannot remake it
            params["edited_photo_at"] = job.photo_at
        return params


def model_id_of(folder: Path) -> str:
    """Folder name plus the first hex digits of the weights' hash: names exactly which weights made an image."""
    digest = hashlib.sha256((folder / WEIGHTS_NAME).read_bytes()).hexdigest()[:10]
    return f"{folder.name}-{digest}"
