"""The fast mode: a student distilled from the teacher U-Net, with w as an input, that samples in 1-8 steps.

The teacher needs two predictions per step (conditional and unconditional) and 12 steps; the student answers the
teacher's guided eps = (1 + w) * eps_cond - w * eps_uncond in one forward, and is trained by consistency
distillation (Luo et al. 2023, "Latent Consistency Models"; diffusers' examples/consistency_distillation) to jump
from any noise level on a skipped-timestep grid to the end of the teacher's trajectory, so LCMScheduler samples it in
a few steps. w enters as diffusers' LCM example feeds it: a sinusoidal embedding of w through the U-Net's
`timestep_cond` (a linear map into the timestep embedding, `time_cond_proj_dim`), initialised to zero so that the
untrained student is the teacher's conditional prediction exactly.

What the student cannot do: it never makes the conditional and unconditional predictions apart, so a negative
prompt (another unconditional), a prompt switch part way, a photo edit (a start part way down the teacher's
trajectory) and playback's panels and heat maps need the teacher. Those are refused in words (`needs_teacher`).

Training: clipdiff/training/train_fast.py (`python -m clipdiff train-fast`); weights in checkpoints/fast, opt-in
(`app.py --fast`, `clipdiff sample --sampler fast`).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from .checkpoints import (CONFIG_NAME, WEIGHTS_NAME, CheckpointError, atomic_save_json, atomic_save_safetensors,
                          load_state_dict_checked, read_config, read_safetensors)
from .diffusion import DiffusionConfig
from .sampling import GuidedRun, Progress, SamplerInputs, initial_noise, step_noise_generator
from .schedulers import (LCM_ORIGINAL_STEPS, LCM_TIMESTEP_SCALING, STUDENT_SAMPLERS, NoiseSchedule, make_scheduler,
                         sampler_spec)
from .unet import ConditionalUNet

FORMAT = "clipdiff-fast-v1"
FAST_SAMPLER = STUDENT_SAMPLERS[0]
TRAIN_HINT = "train it with `python -m clipdiff train-fast`"


@dataclass
class FastConfig:
    """The student: the teacher's diffusion config (architecture, schedule, the CLIP it expects), which teacher it
    was distilled from, how w reaches it, and the grid it was distilled on."""
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    teacher: str = ""                  # the teacher's model id (pipeline.model_id_of): a student of no other
    guidance_embed_dim: int = 64       # width of w's sinusoidal embedding
    # w is multiplied by this before the embedding: its frequencies then run from 1 per 0.01 of w to 1 per 100.
    # diffusers' LCM example uses 1000 for w of 2..15.
    w_scale: float = 100.0
    w_range: tuple[float, float] = (0.0, 4.0)   # the w it was trained on; others are refused
    original_inference_steps: int = LCM_ORIGINAL_STEPS
    timestep_scaling: float = LCM_TIMESTEP_SCALING
    training: dict = field(default_factory=dict)    # data and run summary, for the model card

    def __post_init__(self):
        if isinstance(self.diffusion, dict):
            self.diffusion = DiffusionConfig.from_dict(self.diffusion)
        self.w_range = tuple(float(w) for w in self.w_range)
        if self.guidance_embed_dim < 2 or self.guidance_embed_dim % 2:
            raise ValueError("guidance_embed_dim must be an even number, at least 2")
        if not 1 <= self.original_inference_steps <= self.diffusion.schedule.num_train_timesteps:
            raise ValueError("original_inference_steps must be between 1 and the schedule's T")

    @property
    def scheduler_settings(self) -> dict:
        """What LCMScheduler needs beyond the schedule: the grid this student was distilled on."""
        return {"original_inference_steps": self.original_inference_steps, "timestep_scaling": self.timestep_scaling}

    def to_dict(self) -> dict:
        d = asdict(self)
        d["diffusion"] = self.diffusion.to_dict()
        return {"format": FORMAT, **d}

    @classmethod
    def from_dict(cls, d: dict) -> "FastConfig":
        return cls(**{k: v for k, v in d.items() if k != "format"})


def guidance_embedding(w: torch.Tensor, dim: int, scale: float) -> torch.Tensor:
    """(B,) -> (B, dim): sin and cos of w * scale at dim / 2 frequencies from 1 to 1/10000, as diffusers' LCM
    pipeline embeds its guidance scale (`get_guidance_scale_embedding`)."""
    half = dim // 2
    freqs = torch.exp(torch.arange(half, dtype=torch.float32, device=w.device) * -(math.log(10000.0) / (half - 1)))
    angles = (w.float() * scale)[:, None] * freqs[None, :]
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)


class FastStudent(ConditionalUNet):
    """The teacher's U-Net plus w: forward(x, t, cond) where each row of cond is the CLIP condition followed by w.

    w rides in the condition row, so a student's question is shaped like a teacher's, (x, t, cond): the serving
    batcher, the runtimes' ONNX export (`cond_dim` wide) and sampling.Predictor take it unchanged."""

    def __init__(self, config: FastConfig):
        super().__init__(config.diffusion.unet, time_cond_proj_dim=config.guidance_embed_dim)
        self.fast = config
        with torch.no_grad():       # w starts with no say: the untrained student is the conditional teacher
            self.unet.time_embedding.cond_proj.weight.zero_()

    @property
    def cond_dim(self) -> int:
        return self.config.cond_dim + 1

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """eps of the teacher's guided prediction at w, for x at timesteps t (B,); cond (B, D + 1): condition, w."""
        condition, w = cond[:, :-1], cond[:, -1]
        w_emb = guidance_embedding(w, self.fast.guidance_embed_dim, self.fast.w_scale).to(x.dtype)
        return self.unet(x, t, encoder_hidden_states=condition[:, None, :], class_labels=condition,
                         timestep_cond=w_emb).sample

    @classmethod
    def from_teacher(cls, teacher: ConditionalUNet, config: FastConfig) -> "FastStudent":
        """A student that starts as the teacher: every weight copied; w's projection new, at zero."""
        student = cls(config)
        missing, unexpected = student.load_state_dict(teacher.state_dict(), strict=False)
        if unexpected or set(missing) != {"unet.time_embedding.cond_proj.weight"}:
            raise CheckpointError(f"the teacher does not fit the student: missing {missing}, unexpected {unexpected}")
        return student


def rows(cond: torch.Tensor, w: torch.Tensor | float) -> torch.Tensor:
    """(N, D) conditions and (N,) or scalar w -> (N, D + 1): the student's condition rows."""
    w = torch.as_tensor(w, dtype=torch.float32, device=cond.device).reshape(-1).expand(cond.shape[0])
    return torch.cat([cond.float(), w[:, None]], dim=1)


def save_fast(model: FastStudent, config: FastConfig, folder: Path, dtype: torch.dtype | None = torch.float16) -> None:
    """The student's weights (fp16 by default: half the file; read back as fp32) and config, as the teacher's are
    written."""
    folder = Path(folder)
    atomic_save_safetensors(model.state_dict(), folder / WEIGHTS_NAME, metadata={"format": FORMAT}, dtype=dtype)
    atomic_save_json(config.to_dict(), folder / CONFIG_NAME)


def load_fast(folder: Path, device: torch.device | str = "cpu") -> tuple[FastStudent, FastConfig]:
    """The student in folder (float32 in memory); a CheckpointError that says what is missing or wrong."""
    folder = Path(folder)
    if not (folder / WEIGHTS_NAME).is_file():
        raise CheckpointError(f"no fast-mode student in {folder} (missing {WEIGHTS_NAME}); {TRAIN_HINT}")
    config = read_config(folder, FORMAT, "fast-mode", FastConfig.from_dict)
    model = FastStudent(config)
    load_state_dict_checked(model, read_safetensors(folder / WEIGHTS_NAME), folder / WEIGHTS_NAME)
    return model.float().eval().to(device), config


def needs_teacher(feature: str) -> str:
    """Why a feature is refused in the fast mode, in words: the one home of that sentence."""
    return (f"{feature} needs the teacher U-Net: the fast mode's student makes one guided prediction a step, never the "
            f"conditional and unconditional ones apart. Choose another sampler (e.g. dpmsolver-karras) for this.")


def w_outside(config: FastConfig, ws) -> str | None:
    """Why these w are refused by this student, in words (None: all within the w it learned)."""
    low, high = config.w_range
    outside = sorted({float(w) for w in ws if not low <= float(w) <= high})
    if not outside:
        return None
    return (f"The fast mode learned w from {low:g} to {high:g}, not w = {', '.join(format(w, 'g') for w in outside)}: "
            "choose another sampler (the teacher's) for that w.")


def stepper_for(inputs: SamplerInputs, record_every: int, teacher: ConditionalUNet, schedule: NoiseSchedule | None,
                student: FastStudent | None = None, student_config: FastConfig | None = None,
                no_student: str = "The fast mode is not loaded.") -> tuple["GuidedRun | FastRun", ConditionalUNet]:
    """The one place that decides who samples a run: the run and the model that answers its steps. The teacher's
    guided run, or for a student sampler the student's FastRun (which records nothing: playback needs the teacher).
    The local pipeline (ClipDiffusionPipeline.stepper) and a Ray replica (serving.loop.start_run) both call it."""
    if not sampler_spec(inputs.sampler).student:
        return GuidedRun.of(teacher, inputs, schedule, record_every), teacher
    if student is None:
        raise ValueError(no_student)
    if inputs.uncond is not None or inputs.switch is not None or inputs.start is not None:
        raise ValueError(needs_teacher("A negative prompt, a prompt switch or a photo edit"))
    return FastRun(student, student_config, inputs.cond, inputs.w, list(inputs.seeds), inputs.steps), student


class FastRun:
    """One fast-mode run as the same state machine as sampling.GuidedRun (model_input, advance), one student forward
    per step: LCMScheduler takes the student's eps to its x0 guess, then noises that guess down to the next step's
    level with each sample's own noise (so a seed makes the same image whatever shares its batch)."""

    @torch.inference_mode()
    def __init__(self, model: FastStudent, config: FastConfig, cond: torch.Tensor, w: torch.Tensor | float,
                 seeds: list[int], steps: int = 4):
        n = cond.shape[0]
        if len(seeds) != n:
            raise ValueError(f"need one seed per condition: {len(seeds)} seeds for {n} conditions")
        device = next(model.parameters()).device
        cfg = config.diffusion.unet
        self.n, self.sampler = n, FAST_SAMPLER
        self.scheduler = make_scheduler(FAST_SAMPLER, config.diffusion.schedule, **config.scheduler_settings)
        self.scheduler.set_timesteps(steps, device=device)
        self.generators = [step_noise_generator(s) for s in seeds]
        self.x = initial_noise(seeds, (cfg.channels, cfg.image_size, cfg.image_size)).to(device)
        self.x = self.x * self.scheduler.init_noise_sigma
        self.rows = rows(cond.to(device), torch.as_tensor(w, dtype=torch.float32).to(device))
        self.total = len(self.scheduler.timesteps)
        self.i = 0

    @property
    def done(self) -> bool:
        return self.i >= self.total

    def unchanged(self) -> Progress:
        return Progress(step=self.total, total=self.total, timestep=0, x0=self.x, images=self.x.clamp(-1, 1))

    def model_input(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """This step's question to the student: x, t, the condition rows (condition and w)."""
        t = self.scheduler.timesteps[self.i]
        return self.x, t.expand(self.n), self.rows

    @torch.inference_mode()
    def advance(self, eps: torch.Tensor) -> Progress:
        i, t = self.i, self.scheduler.timesteps[self.i]
        out = self.scheduler.step(eps, t, self.x, generator=self.generators)
        self.x = out.prev_sample
        self.i += 1
        return Progress(step=i + 1, total=self.total, timestep=int(t), x0=out.denoised.clamp(-1, 1),
                        images=self.x.clamp(-1, 1) if self.done else None)
