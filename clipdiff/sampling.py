"""The guided sampler: classifier-free guidance over any scheduler, yielding as it goes and recording steps.

    eps = (1 + w) * eps_cond - w * eps_uncond

w = 0 is the conditional prediction alone, w = -1 the unconditional alone. Conditional and unconditional
run as one doubled batch, one U-Net forward per step. Each sample has its own seed, so a sample's pixels
depend only on its seed, condition, w and sampler settings, not on what else shares the batch.

Two things a prompt debugger asks of the same loop, both per sample and both off unless asked for:
- a negative condition: `uncond` replaces the learned null in the unconditional half, so guidance pushes away from
  that prompt instead of from "no prompt": eps = (1 + w) * eps(prompt) - w * eps(negative);
- a condition switch (prompt editing, the web UI's [A:B:f]): `Switch` conditions a sample on A for its first
  round(f * steps) steps and on B after them, so f = 1 is A alone and f = 0 is B alone.
And a third, for editing a photo (SDEdit, Meng et al. 2021): `Start` begins the run part way, from the photo noised to
that step, so the run only denoises the rest of the way.

`Sampling` is what a run is asked for (w, steps, sampler, seed): its defaults and bounds are the app's and the
CLI's alike. `stream` turns a run's progress into pictures as the app shows them while it samples.
"""
from __future__ import annotations

import math
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Iterator

import numpy as np
import torch

from .schedulers import (DEFAULT_SAMPLER, REGISTRY, NoiseSchedule, make_scheduler, predicted_x0, sampler_spec,
                         step_options)

if TYPE_CHECKING:   # only named in annotations: the settings above are read without loading diffusers
    from .unet import ConditionalUNet

# Measured on the shipped U-Net (benchmarks/README.md): DPM-Solver++(2M) with Karras noise levels (DEFAULT_SAMPLER,
# schedulers.py) at 12 steps beats the evenly spaced DPM-Solver++ at 20 on CLIP score, FD_CLIP and CMMD, in 0.6x the
# time.
DEFAULT_STEPS = 12
DEFAULT_W = 2.0
W_RANGE = (-10.0, 10.0)         # the reference sweeps -2..2; past 10 every image is blown out
STEPS_RANGE = (1, 400)          # the training schedule's T: more steps than timesteps means nothing
SEED_RANGE = (0, 2**31 - 1)


def seeds_from(seed: int, n: int) -> list[int]:
    """The seeds of n images from `seed`: seed, seed + 1, ..., wrapping past the last seed to 0, so every image's
    seed is one the app and the CLI accept (its PNG's seed makes that image again)."""
    return [SEED_RANGE[0] + (seed + k - SEED_RANGE[0]) % (SEED_RANGE[1] - SEED_RANGE[0] + 1) for k in range(n)]


@dataclass(frozen=True)
class Sampling:
    """What one run is asked for. The defaults are the app's controls' and the CLI's flags'; the bounds are what
    either accepts (the app clamps a value to them and says so, the CLI refuses it)."""
    w: float = DEFAULT_W
    steps: int = DEFAULT_STEPS
    sampler: str = DEFAULT_SAMPLER
    seed: int = 0

    def problems(self) -> list[str]:
        """What lies outside the bounds, in words; empty when every value is one the app would use as is."""
        found = []
        if not W_RANGE[0] <= self.w <= W_RANGE[1]:
            found.append(f"w must be between {W_RANGE[0]:g} and {W_RANGE[1]:g}, not {self.w:g}")
        if not STEPS_RANGE[0] <= self.steps <= STEPS_RANGE[1]:
            found.append(f"steps must be between {STEPS_RANGE[0]} and {STEPS_RANGE[1]}, not {self.steps}")
        if self.sampler not in REGISTRY:
            found.append(f"sampler must be one of {', '.join(REGISTRY)}, not {self.sampler!r}")
        elif self.steps > max_steps(self.sampler):
            found.append(f"the {self.sampler} sampler takes at most {max_steps(self.sampler)} steps, not {self.steps}")
        if not SEED_RANGE[0] <= self.seed <= SEED_RANGE[1]:
            found.append(f"seed must be between {SEED_RANGE[0]} and {SEED_RANGE[1]}, not {self.seed}")
        return found


def max_steps(sampler: str) -> int:
    """The most steps this sampler takes (the registry's, else the schedule's T)."""
    return sampler_spec(sampler).max_steps or STEPS_RANGE[1]


def default_steps(sampler: str) -> int:
    """The steps this sampler runs when none are asked for: DEFAULT_STEPS, or the registry's own (the fast mode: 4)."""
    return sampler_spec(sampler).default_steps or DEFAULT_STEPS


MAX_RECORDS = 100  # recorded steps per run at most, whatever the stride: keeps playback memory bounded


# to_uint8 and _pixel_rms run several times a sampler step on small tensors, in numpy: torch's round and sqrt took
# 2-7 ms a call there (against 0.03 ms in a loop of their own), a fifth of a 4-image generation beside ONNX Runtime
# on 2 busy cores; numpy's give the same bytes (rint rounds half to even, as torch.round does).
def to_uint8(x: torch.Tensor) -> np.ndarray:
    """(N, C, H, W) in [-1, 1] -> (N, H, W, C) uint8."""
    a = x.detach().float().cpu().numpy()
    return np.rint((np.clip(a, -1, 1) + 1) * 127.5).astype(np.uint8).transpose(0, 2, 3, 1)


def from_uint8(frames) -> torch.Tensor:
    """(N, H, W, 3) uint8, array or tensor -> (N, 3, H, W) in [-1, 1]: to_uint8 undone (to its rounding), and how
    every picture enters the models."""
    x = torch.from_numpy(np.ascontiguousarray(frames)) if isinstance(frames, np.ndarray) else frames
    return x.permute(0, 3, 1, 2).float() / 127.5 - 1


@dataclass
class StepRecord:
    """One recorded sampler step, as small uint8 frames (N, H, W, 3) and where guidance acts, per pixel (N, H, W).

    The U-Net conditions on one token (the CLIP embedding), so its cross-attention weights are all 1 and attention
    maps (DAAM) say nothing here; what the prompt changes is read off the two noise predictions instead."""
    step: int                 # 0-based index into the sampler's timesteps
    timestep: int             # the training timestep t
    x_t: np.ndarray
    x0: np.ndarray            # from the guided prediction
    x0_cond: np.ndarray
    x0_uncond: np.ndarray
    eps_gap: np.ndarray       # (N, H, W) float16: |eps_cond - eps_uncond|, RMS over the channels of each pixel
    guidance: np.ndarray      # (N, H, W) float16: the same of the guidance term w (eps_cond - eps_uncond)

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in (self.x_t, self.x0, self.x0_cond, self.x0_uncond, self.eps_gap, self.guidance))


@dataclass
class Progress:
    step: int                          # steps done, 1..total
    total: int
    timestep: int
    x0: torch.Tensor                   # guided x0 prediction at this step, (N, C, H, W) in [-1, 1]
    record: StepRecord | None = None
    images: torch.Tensor | None = None  # the final samples, on the last event only


def initial_noise(seeds: list[int], shape: tuple[int, ...]) -> torch.Tensor:
    """One CPU generator per sample: the same seed gives the same noise on any device."""
    return torch.stack([torch.randn(shape, generator=torch.Generator("cpu").manual_seed(int(s))) for s in seeds])


def step_noise_generator(seed: int) -> torch.Generator:
    """DDPM's per-step noise for one sample: a stream derived from (seed, 1), so it is never another seed's
    initial noise (seed + 1 made image s's step noise image s + 1's starting noise)."""
    stream = int(np.random.SeedSequence([int(seed) % 2**63, 1]).generate_state(1, np.uint64)[0])
    return torch.Generator("cpu").manual_seed(stream)


def record_stride(steps: int, record_every: int) -> int:
    # Steps 0, s, 2s, ... plus the last are recorded: ceil((steps - 1) / s) + 1 of them, at most MAX_RECORDS.
    return max(record_every, -(-(steps - 1) // (MAX_RECORDS - 1))) if record_every > 0 else 0


def switch_step(fraction: float, steps: int) -> int:
    """The first step conditioned on the second prompt: round(fraction * steps), halves rounded up (not to even,
    so 0.5 of 3 steps is 2 steps of the first prompt)."""
    return int(math.floor(fraction * steps + 0.5))


@dataclass(frozen=True)
class Switch:
    """Prompt editing: sample k is conditioned on its own condition until switch_step(at[k], steps), then on
    cond[k]. A sample with at = 1 never switches; one with at = 0 follows cond from the first step."""
    cond: torch.Tensor          # (N, D) the conditions after the switch
    at: tuple[float, ...]       # (N,) fractions of the steps, 0..1

    def __post_init__(self):
        if any(not 0 <= f <= 1 for f in self.at):
            raise ValueError(f"switch fractions must be between 0 and 1, not {list(self.at)}")


@dataclass(frozen=True)
class Start:
    """SDEdit: sample k starts from images[k] noised to the first sampler timestep below at * T, with its own seed's
    noise, and takes only the steps from there. at = 1 keeps every step and starts from that noise alone (a plain
    generation: the sampler's first timestep is pure noise by convention); at = 0 keeps none (the image as it is)."""
    images: torch.Tensor        # (N, C, H, W) in [-1, 1]
    at: float                   # fraction of the training timesteps T, 0..1

    def __post_init__(self):
        if not 0 <= self.at <= 1:
            raise ValueError(f"the start must be a fraction from 0 to 1, not {self.at}")

    def first_step(self, timesteps: torch.Tensor, num_train_timesteps: int) -> int:
        """The index of the first sampler step taken: the first timestep below at * T (len(timesteps): none)."""
        if self.at >= 1:
            return 0
        below = (timesteps < self.at * num_train_timesteps).nonzero()
        return int(below[0]) if len(below) else len(timesteps)


@dataclass(frozen=True)
class SamplerInputs:
    """Everything one guided run samples from, as the sampler takes it: built once per run (the local run and a
    served request take the same value, see pipeline.ClipDiffusionPipeline.prepare)."""
    cond: torch.Tensor                  # (N, D) conditions of the conditional half
    w: torch.Tensor                     # (N,) guidance weights
    seeds: tuple[int, ...]              # (N,)
    steps: int = DEFAULT_STEPS
    sampler: str = DEFAULT_SAMPLER
    uncond: torch.Tensor | None = None  # (N, D) the unconditional half's (negative prompts, null rows); None: null
    switch: Switch | None = None        # prompt editing; None: no switch
    start: Start | None = None          # SDEdit: photos to start from part way; None: from noise, every step

    @property
    def final(self) -> torch.Tensor:
        """(N, D) the condition each sample ends on (what its image is scored against): its switch's where f < 1."""
        if self.switch is None:
            return self.cond
        ends = torch.tensor([f < 1 for f in self.switch.at]).unsqueeze(1)
        return torch.where(ends, self.switch.cond, self.cond)


# The one U-Net call of a sampler step: (x_in (B, C, H, W), t (B,), cond (B, D)) -> eps (B, C, H, W). A step asks
# for B = 2N predictions (conditional and unconditional); the default is the local model, a served one may share
# the forward with other requests' steps (clipdiff.serving).
Predictor = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


@torch.inference_mode()
def sample_guided(
    model: ConditionalUNet,
    cond: torch.Tensor,
    w: torch.Tensor | float,
    seeds: list[int],
    sampler: str = DEFAULT_SAMPLER,
    steps: int = DEFAULT_STEPS,
    schedule: NoiseSchedule | None = None,
    record_every: int = 0,
    predict: Predictor | None = None,
    uncond: torch.Tensor | None = None,
    switch: Switch | None = None,
    start: Start | None = None,
) -> Iterator[Progress]:
    """Yield a Progress after every step; the last one carries the final images.

    cond: (N, D) conditions; w: scalar or (N,) guidance weights; seeds: N seeds.
    record_every > 0 records every k-th step (and always the last), at most MAX_RECORDS of them.
    predict: the U-Net call (default: model itself).
    uncond: (N, D) conditions of the unconditional half (negative prompts; rows of the null where none); None: null.
    switch: prompt editing, each sample's second condition and when it takes over; None: no switch.
    start: SDEdit, the images to start from and how far into the steps; None: from noise, every step. A start
    that keeps no step yields one Progress with the images as they are.
    Stop iterating (or close the generator) to cancel between steps.
    """
    run = GuidedRun(model, cond, w, seeds, sampler, steps, schedule, record_every, uncond, switch, start)
    return drive(run, predict or model)


@torch.inference_mode()
def drive(run: "GuidedRun", predict: Predictor) -> Iterator[Progress]:
    """Yield a Progress after every step of run, predict called once per step (a run of no steps: one Progress with
    its images as they are)."""
    if run.done:
        yield run.unchanged()
    while not run.done:
        yield run.advance(predict(*run.model_input()))


class GuidedRun:
    """One guided sampling run as a state machine: model_input() is what the U-Net is asked this step, advance()
    takes its answer and returns the step's Progress. sample_guided drives it with a plain call; a served sampler
    drives it with an awaited, batched one (clipdiff.serving.loop)."""

    @torch.inference_mode()
    def __init__(self, model: ConditionalUNet, cond: torch.Tensor, w: torch.Tensor | float, seeds: list[int],
                 sampler: str = DEFAULT_SAMPLER, steps: int = DEFAULT_STEPS, schedule: NoiseSchedule | None = None,
                 record_every: int = 0, uncond: torch.Tensor | None = None, switch: Switch | None = None,
                 start: Start | None = None):
        n = cond.shape[0]
        if len(seeds) != n:
            raise ValueError(f"need one seed per condition: {len(seeds)} seeds for {n} conditions")
        for name, other in (("uncond", uncond), ("switch", None if switch is None else switch.cond)):
            if other is not None and other.shape != cond.shape:
                raise ValueError(f"{name} must be shaped like cond {tuple(cond.shape)}, not {tuple(other.shape)}")
        if start is not None and start.images.shape[0] != n:
            raise ValueError(f"need one start image per condition: {start.images.shape[0]} for {n} conditions")
        if switch is not None and len(switch.at) != n:
            raise ValueError(f"need one switch fraction per condition: {len(switch.at)} for {n} conditions")
        if sampler_spec(sampler).student:
            raise ValueError(f"the {sampler} sampler runs the fast mode's student, not a guided U-Net "
                             "(clipdiff.fast.FastRun)")
        device = next(model.parameters()).device
        cfg = model.config
        self.n, self.sampler = n, sampler
        self.w = torch.as_tensor(w, dtype=torch.float32, device=device).reshape(-1, 1, 1, 1).expand(n, 1, 1, 1)
        self.scheduler = make_scheduler(sampler, schedule)
        self.scheduler.set_timesteps(steps, device=device)
        self.alphas_cumprod = self.scheduler.alphas_cumprod.to(device)
        self.generators = [step_noise_generator(s) for s in seeds]  # DDPM's per-step noise
        x = initial_noise(seeds, (cfg.channels, cfg.image_size, cfg.image_size)).to(device)
        self.x = x * self.scheduler.init_noise_sigma
        uncond = model.null_condition(n) if uncond is None else uncond.to(device, torch.float32)
        self.both_cond = torch.cat([cond.to(device, torch.float32), uncond])
        self.total = len(self.scheduler.timesteps)
        # Prompt editing: the doubled conditions after the switch, and the step each sample switches at.
        self.switched = None if switch is None else torch.cat([switch.cond.to(device, torch.float32), uncond])
        self.switch_steps = None if switch is None else \
            torch.tensor([switch_step(f, self.total) for f in switch.at] * 2, device=device)
        self.stride = record_stride(self.total, record_every)
        # What this scheduler's step takes beyond (eps, t, x): DDPM draws per-sample noise from a list of generators
        # (CPU ones keep seeds portable); the deterministic samplers ignore it.
        self.step_kwargs = step_options(self.scheduler, generator=self.generators)
        self.i = 0
        if start is not None:
            self.i = start.first_step(self.scheduler.timesteps, self.scheduler.config.num_train_timesteps)
            self.x = self._noised(start.images.to(device, torch.float32), x)

    @classmethod
    def of(cls, model: ConditionalUNet, inputs: SamplerInputs, schedule: NoiseSchedule | None = None,
           record_every: int = 0) -> "GuidedRun":
        """The run a prepared SamplerInputs asks for: the one way both the local and the served sampler start."""
        return cls(model, inputs.cond, inputs.w, list(inputs.seeds), inputs.sampler, inputs.steps, schedule,
                   record_every, inputs.uncond, inputs.switch, inputs.start)

    def _noised(self, images: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """The start images noised to the first step's timestep (by the scheduler's own q(x_t | x0), so a solver that
        tracks its step sees the start it expects); from step 0 the noise alone, as a plain run starts."""
        if self.i == 0:
            return self.x
        if self.i >= len(self.scheduler.timesteps):
            return images
        if hasattr(self.scheduler, "set_begin_index"):
            self.scheduler.set_begin_index(self.i)
        t = self.scheduler.timesteps[self.i]
        return self.scheduler.add_noise(images, noise, t.expand(images.shape[0]))

    @property
    def done(self) -> bool:
        return self.i >= self.total

    def unchanged(self) -> Progress:
        """The one Progress of a run that takes no step (a start at 0): its images as they are."""
        return Progress(step=self.total, total=self.total, timestep=0, x0=self.x, images=self.x.clamp(-1, 1))

    @torch.inference_mode()
    def model_input(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """This step's question to the U-Net: x twice (conditional, unconditional), t, the two conditions."""
        t = self.scheduler.timesteps[self.i]
        x_in = self.scheduler.scale_model_input(self.x, t)     # the identity for DDPM/DDIM/DPM-Solver, not Euler's
        return torch.cat([x_in, x_in]), t.expand(2 * self.n), self.conditions_now()

    def conditions_now(self) -> torch.Tensor:
        """(2N, D): this step's conditions, conditional half then unconditional half."""
        if self.switched is None:
            return self.both_cond
        return torch.where((self.i < self.switch_steps).unsqueeze(1), self.both_cond, self.switched)

    @torch.inference_mode()
    def advance(self, eps_both: torch.Tensor) -> Progress:
        """Guide with the U-Net's answer to model_input(), take the sampler step, say where the run is."""
        i, t, x, w = self.i, self.scheduler.timesteps[self.i], self.x, self.w
        eps_cond, eps_uncond = eps_both.chunk(2)
        eps = (1 + w) * eps_cond - w * eps_uncond
        a_bar = self.alphas_cumprod[t]
        x0 = predicted_x0(x, eps, a_bar)
        record = None
        if self.stride and (i % self.stride == 0 or i == self.total - 1):
            gap = eps_cond - eps_uncond
            record = StepRecord(
                step=i, timestep=int(t), x_t=to_uint8(x), x0=to_uint8(x0),
                x0_cond=to_uint8(predicted_x0(x, eps_cond, a_bar)),
                x0_uncond=to_uint8(predicted_x0(x, eps_uncond, a_bar)),
                eps_gap=_pixel_rms(gap), guidance=_pixel_rms(w * gap))
        self.x = self.scheduler.step(eps, t, x, **self.step_kwargs).prev_sample
        self.i += 1
        last = self.done
        return Progress(step=i + 1, total=self.total, timestep=int(t), x0=x0, record=record,
                        images=self.x.clamp(-1, 1) if last else None)


def _pixel_rms(eps: torch.Tensor) -> np.ndarray:
    """(N, C, H, W) -> (N, H, W) float16: half the bytes of float32, and a map needs no more digits."""
    a = eps.float().cpu().numpy()
    return np.sqrt(np.mean(a * a, axis=1)).astype(np.float16)


@dataclass
class SampleResult:
    images: torch.Tensor                      # (N, C, H, W) in [-1, 1]
    records: list[StepRecord] = field(default_factory=list)


def run_to_end(progress: Iterator[Progress]) -> SampleResult:
    records = []
    final = None
    for p in progress:
        if p.record is not None:
            records.append(p.record)
        final = p
    return SampleResult(final.images, records)


# While sampling, one picture of every image's current x0 goes out at most this often (the first step's always):
# each streamed output is a file the app writes and the browser (or client) downloads, and sending every step's
# gallery made the app ~10x slower than the sampler itself (benchmarks/README.md).
PREVIEW_EVERY_S = 0.15


@dataclass
class Frames:
    """A run as pictures: every image's current x0 while sampling; at the end the final images and the recorded
    steps."""
    step: int                                  # steps done, 1..total
    total: int
    images: np.ndarray                         # (N, H, W, 3) uint8
    records: list[StepRecord] | None = None    # on the final Frames only (empty when nothing was recorded)
    stopped: bool = False                      # the last Frames of a run stopped part way: images are step's x0

    @property
    def done(self) -> bool:
        return self.records is not None


def stream(progress: Iterator[Progress], preview_every_s: float = PREVIEW_EVERY_S,
           stop: threading.Event | None = None) -> Iterator[Frames]:
    """Frames after the first step, then after any step that ends at least preview_every_s after the last Frames
    went out (the steps in between are not decoded at all), then the final Frames. Once `stop` is set (Stop), the
    sampler stops after the step in progress and the last Frames is that step's x0, marked `stopped`. Leaving this
    generator (a cancelled event) also stops the sampler between two steps."""
    records = []
    last_sent = None
    for p in progress:
        if p.record is not None:
            records.append(p.record)
        if p.images is not None:
            yield Frames(p.step, p.total, to_uint8(p.images), records)
        elif stop is not None and stop.is_set():
            getattr(progress, "close", lambda: None)()     # the sampler (or its replica) stops now, not when collected
            yield Frames(p.step, p.total, to_uint8(p.x0), stopped=True)
            return
        elif last_sent is None or time.perf_counter() - last_sent >= preview_every_s:
            yield Frames(p.step, p.total, to_uint8(p.x0))
            last_sent = time.perf_counter()   # after the consumer sent it: its own time does not count


# How many finished steps a run may hold for its stream's reader (run_ahead): a preview's trip through the app
# (~7 ms) is shorter than one step (~45 ms), and Stop should find the run at most a few steps further on.
RUN_AHEAD_STEPS = 2


def run_ahead(progress: Iterator[Progress], steps: int = RUN_AHEAD_STEPS) -> Iterator[Progress]:
    """The same Progress, sampled in a thread of its own up to `steps` ahead of whoever reads it. The app reads a
    run through stream() in a Gradio worker that, after each preview, waits while Gradio writes and sends it
    (~7 ms here): without this the U-Net idled for that long three times in a lone 4-image click. An error is
    raised where the Progress is read; leaving this generator stops the run after the step in progress."""
    ready: queue.Queue = queue.Queue(maxsize=max(1, steps))
    left = threading.Event()
    done = object()

    def hand(item) -> bool:
        """Hand item to the reader; False once the reader has left. A hand-over that blocks on a full queue as the
        reader leaves is freed by the reader emptying it (below): after `left`, at most this one item goes in."""
        if left.is_set():
            return False
        ready.put(item)
        return True

    def produce() -> None:
        try:
            items = iter(progress)
            while not left.is_set():         # no step starts once the reader has left
                item = next(items, done)
                if not hand(item) or item is done:
                    return
        except BaseException as error:   # noqa: BLE001 - raised again in the reader's thread
            hand(error)
        finally:
            getattr(progress, "close", lambda: None)()     # in this thread: the one that ran it

    threading.Thread(target=produce, name="clipdiff-run", daemon=True).start()
    try:
        while (item := ready.get()) is not done:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        left.set()
        while not ready.empty():
            ready.get_nowait()
