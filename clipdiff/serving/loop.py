"""One request's sampling loop on a served sampler: the same run as the local sampler (the teacher's GuidedRun, or
for the fast sampler the student's FastRun: fast.stepper_for chooses for both), but the model call is awaited, so
while this request waits for its step's prediction the replica's event loop serves the others and a batcher can
answer many requests' steps with one forward.

A SampleRequest is what a front sends: conditions already encoded by its CLIP (the model tier holds the U-Net and
the fast mode's student only; negative prompts and prompt edits travel as conditions too), guidance weights, seeds
and the sampler settings. Cancelling the task that iterates sample_async stops it at the awaited prediction: no step
starts after the cancel, and the step in flight is dropped.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import AsyncIterator, Awaitable, Callable

import torch

from ..fast import FastConfig, FastRun, FastStudent, stepper_for, w_outside
from ..sampling import GuidedRun, Progress, SamplerInputs, Start, Switch
from ..schedulers import SAMPLERS, STUDENT_SAMPLERS, NoiseSchedule, sampler_spec
from ..unet import ConditionalUNet
from .batching import ModelInput

AsyncPredictor = Callable[[ModelInput], Awaitable[torch.Tensor]]

# What one request may ask of the model tier, whatever the front allowed (the app's own limits are tighter).
MAX_REQUEST_IMAGES = 64
MAX_REQUEST_STEPS = 1000


@dataclass
class SampleRequest:
    cond: torch.Tensor                 # (N, D) U-Net conditions (CLIP embeddings as the checkpoint expects them)
    w: list[float]
    seeds: list[int]
    steps: int
    sampler: str
    record_every: int = 0
    model_id: str | None = None        # the front's idea of the weights; a replica with others refuses
    student_id: str | None = None      # ... and of the fast mode's student (None: the front has none)
    label: str = field(default="", repr=False)   # free text for logs (never used as a file name)
    uncond: torch.Tensor | None = None          # (N, D) negative conditions (null rows where none); None: the null
    switch_cond: torch.Tensor | None = None     # (N, D) prompt editing: the conditions after each sample's switch
    switch_at: list[float] | None = None        # (N,) ... and when, as fractions of the steps
    start_images: torch.Tensor | None = None    # (N, C, H, W) SDEdit: the photos the run starts from ...
    start_at: float | None = None               # ... noised to this fraction of T

    @classmethod
    def of(cls, inputs: SamplerInputs, record_every: int = 0, model_id: str | None = None,
           student_id: str | None = None) -> "SampleRequest":
        """A prepared run's sampler inputs as a request (plain lists and tensors: what travels to a replica)."""
        switch = inputs.switch
        return cls(cond=inputs.cond, w=[float(w) for w in inputs.w], seeds=[int(s) for s in inputs.seeds],
                   steps=int(inputs.steps), sampler=inputs.sampler, record_every=int(record_every), model_id=model_id,
                   student_id=student_id,
                   uncond=inputs.uncond, switch_cond=None if switch is None else switch.cond,
                   switch_at=None if switch is None else list(switch.at),
                   start_images=None if inputs.start is None else inputs.start.images,
                   start_at=None if inputs.start is None else inputs.start.at)

    @property
    def switch(self) -> Switch | None:
        return None if self.switch_cond is None else Switch(self.switch_cond, tuple(self.switch_at))

    @property
    def start(self) -> Start | None:
        return None if self.start_images is None else Start(self.start_images, float(self.start_at))

    @property
    def inputs(self) -> SamplerInputs:
        """The request as the sampler takes it: the value the front's prepare built."""
        return SamplerInputs(self.cond, torch.tensor(self.w, dtype=torch.float32), tuple(self.seeds), self.steps,
                             self.sampler, self.uncond, self.switch, self.start)

    def problems(self, cond_dim: int, student: FastConfig | None = None) -> list[str]:
        """What is wrong with this request for a replica whose teacher takes cond_dim-wide conditions and whose
        fast-mode student (None: it serves none) has this config."""
        n = self.cond.shape[0] if self.cond.ndim == 2 else -1
        found = []
        if self.cond.ndim != 2 or self.cond.shape[1] != cond_dim:
            found.append(f"cond must be (N, {cond_dim}), not {tuple(self.cond.shape)}")
        elif not 1 <= n <= MAX_REQUEST_IMAGES:
            found.append(f"between 1 and {MAX_REQUEST_IMAGES} images per request, not {n}")
        elif not torch.isfinite(self.cond).all():
            found.append("cond has non-finite values")
        if len(self.w) != n or len(self.seeds) != n:
            found.append(f"one w and one seed per condition ({len(self.w)} w, {len(self.seeds)} seeds, {n} conditions)")
        if not all(isinstance(w, (int, float)) and math.isfinite(w) for w in self.w):
            found.append("w must be finite numbers")
        if not all(isinstance(s, int) and 0 <= s < 2**63 for s in self.seeds):
            found.append("seeds must be non-negative integers")
        if not (isinstance(self.steps, int) and 1 <= self.steps <= MAX_REQUEST_STEPS):
            found.append(f"steps must be 1 to {MAX_REQUEST_STEPS}")
        if self.sampler not in SAMPLERS + STUDENT_SAMPLERS:
            found.append(f"sampler must be one of {', '.join(SAMPLERS + STUDENT_SAMPLERS)}")
        elif sampler_spec(self.sampler).student:
            found += self._student_problems(student)
        if not (isinstance(self.record_every, int) and self.record_every >= 0):
            found.append("record_every must be a non-negative integer")
        return found + self._condition_problems()

    def _student_problems(self, student: FastConfig | None) -> list[str]:
        if student is None:
            return [f"this replica serves no fast-mode student (sampler {self.sampler}): deploy it with app.py --fast"]
        found = []
        most = sampler_spec(self.sampler).max_steps
        if isinstance(self.steps, int) and most is not None and self.steps > most:
            found.append(f"sampler {self.sampler} takes 1 to {most} steps")
        if all(isinstance(w, (int, float)) and math.isfinite(w) for w in self.w):
            outside = w_outside(student, self.w)
            found += [outside] if outside else []
        return found

    def _condition_problems(self) -> list[str]:
        found = []
        for name, other in (("uncond", self.uncond), ("switch_cond", self.switch_cond)):
            if other is not None and (other.shape != self.cond.shape or not torch.isfinite(other).all()):
                found.append(f"{name} must be finite and shaped like cond")
        if (self.switch_cond is None) != (self.switch_at is None):
            found.append("switch_cond and switch_at come together")
        elif self.switch_at is not None and (len(self.switch_at) != self.cond.shape[0] or not all(
                isinstance(f, (int, float)) and 0 <= f <= 1 for f in self.switch_at)):
            found.append("switch_at needs one fraction from 0 to 1 per condition")
        if (self.start_images is None) != (self.start_at is None):
            found.append("start_images and start_at come together")
        elif self.start_images is not None and (
                self.start_images.ndim != 4 or self.start_images.shape[0] != self.cond.shape[0] or
                not torch.isfinite(self.start_images).all() or not isinstance(self.start_at, (int, float)) or
                not 0 <= self.start_at <= 1):
            found.append("start_images needs one finite image per condition and start_at a fraction from 0 to 1")
        return found


def start_run(model: ConditionalUNet, request: SampleRequest, schedule: NoiseSchedule | None,
              student: FastStudent | None = None, student_config: FastConfig | None = None
              ) -> tuple[GuidedRun | FastRun, ConditionalUNet]:
    """The request's run and the model that answers its steps, as ClipDiffusionPipeline.stepper starts the local
    one (fast.stepper_for): the teacher's GuidedRun, or for the fast sampler the student's FastRun."""
    return stepper_for(request.inputs, request.record_every, model, schedule, student, student_config,
                       "this replica serves no fast-mode student")


async def sample_async(run: GuidedRun | FastRun, predict: AsyncPredictor) -> AsyncIterator[Progress]:
    """Yield a Progress after every step, as sample_guided does; predict is awaited once per step."""
    if run.done:
        yield run.unchanged()
    while not run.done:
        eps = await predict(run.model_input())
        yield run.advance(eps)
