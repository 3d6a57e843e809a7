"""Distil the fast mode's student from the teacher U-Net: consistency distillation with w as an input.

    python -m clipdiff train-fast --embeddings runs/embeddings --out runs/fast --export checkpoints/fast

As diffusers' examples/consistency_distillation/train_lcm_distill_sd_wds.py does it (Luo et al. 2023), on pixels
instead of latents. Each step takes a batch of training images with their CLIP conditions (precomputed, as
train-unet takes them), a timestep t_n on the skipped grid (every T // --ddim-steps-th timestep) and a w drawn
uniformly from --w-min..--w-max, and noises the images to t_n. Then:
  - the teacher's guided eps at w, (1 + w) * eps_cond - w * eps_uncond (its learned null as the unconditional),
    takes one DDIM step from t_n to t_(n-1) = t_n - k: where the teacher's trajectory goes next;
  - the target network (an EMA of the student, --ema-decay) maps that point to its x0 guess, f(x_(n-1), t_(n-1), w);
  - the student maps x_(t_n) to its own guess f(x_(t_n), t_n, w), and the loss (Huber, or L2) pulls the two
    together: every point of a trajectory should land on the same image.
f(x, t) = c_skip(t) x + c_out(t) x0(eps) is LCMScheduler's boundary condition (f = x at t = 0), so the student is
sampled by LCMScheduler at 1-8 steps. The student starts as the teacher (fast.FastStudent.from_teacher), the target
as the student. Stopped runs resume from --out with the same data order and draws (training/common.py).
"""
from __future__ import annotations

import argparse
import copy
from dataclasses import replace
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .. import data as data_mod
from ..checkpoints import DEFAULT_FAST_DIR, DEFAULT_UNET_DIR, CheckpointError, describe_path, read_json
from ..devices import resolve_device
from ..diffusion import load_diffusion
from ..embed import EmbeddingTable
from ..encoders import ClipEncoder
from ..fast import FAST_SAMPLER, FastConfig, FastStudent, load_fast, rows, save_fast
from ..images import labelled_grid, resized_unit
from ..pipeline import REFERENCE_PROMPTS, ClipDiffusionPipeline, model_id_of, sweep
from ..caveats import MAX_TRUSTED_W
from ..sampling import to_uint8
from ..schedulers import LCM_ORIGINAL_STEPS, LCM_TIMESTEP_SCALING, alphas_cumprod
from .common import (LossLog, RunState, StopRequest, Timer, add_defaults_to_parser, batch_indices, ema_update,
                     load_run, lr_factor, out_of_time, save_run, schedule_position, set_lr, step_generator)
from .train_unet import TrainingSet

LOSSES = ("huber", "l2")
EXPORT_DTYPES = {"fp16": torch.float16, "fp32": torch.float32}
SAMPLE_WS = (0.0, 2.0, 4.0)       # the grid watched during training: the reference prompts at these w


def fast_defaults() -> dict:
    fast = FastConfig()
    return dict(
        data=None,                       # the images the embeddings were computed from (same order)
        embeddings="runs/embeddings",    # the teacher's CLIP's embeddings (python -m clipdiff embed)
        teacher=str(DEFAULT_UNET_DIR),
        # an exported student to start from instead of the teacher (e.g. checkpoints/fast): continues a shipped
        # student's distillation where its run folder is gone (its optimizer state is not exported: Adam restarts)
        init=None,
        out="runs/fast",
        export=str(DEFAULT_FAST_DIR),
        clip="default", clip_pretrained=None,     # for the sample grids only
        # w as the student learns it: drawn uniformly from w_min..w_max, embedded with guidance_embed_dim sinusoids
        # of w * w_scale (fast.guidance_embedding). Not the app's whole range (sampling.W_RANGE, -10..10): drawn
        # from it, 500 steps lost the prompts (every prompt the same mush, `benchmarks/README.md`, Fast mode), since
        # until the student tells w apart it learns the mean of guidance towards a prompt (w > 0) and away from it
        # (w < 0). 0..4: the conditional prediction (w = 0) to the guidance the teacher was made for
        # (caveats.MAX_TRUSTED_W); the app's default w = 2 in the middle. Outside it the fast mode refuses.
        w_min=0.0, w_max=MAX_TRUSTED_W,
        guidance_embed_dim=fast.guidance_embed_dim, w_scale=fast.w_scale,
        ddim_steps=LCM_ORIGINAL_STEPS,   # the skipped grid: the teacher's DDIM steps of k = T // ddim_steps
        timestep_scaling=LCM_TIMESTEP_SCALING,
        loss="huber", huber_c=0.001,     # diffusers' example's pseudo-Huber, c per pixel value
        text_prob=0.5, flip_prob=0.5,    # conditions as train-unet draws them: caption or image embedding
        batch_size=32, lr=1e-4, warmup_steps=100, max_steps=4000, ema_decay=0.95,
        max_seconds=0.0,                 # > 0: a time-boxed run; the cosine schedule ends when the time does
        export_dtype="fp16",
        seed=0, save_every=100, sample_every=500, sample_steps=4, n_heldout=1000, threads=0, device="auto",
    )


class DDIMSolver:
    """The teacher's DDIM step on the skipped grid: t_n = (n + 1) k - 1 for n = 0..N-1, each step to t_n - k (to 0
    from the first), as the example's DDIMSolver. The x0 guess is clipped to the image range, as the teacher's DDIM
    sampler clips it (schedulers._ddim)."""

    def __init__(self, a_bar: torch.Tensor, steps: int):
        self.k = len(a_bar) // steps
        self.timesteps = torch.arange(1, steps + 1) * self.k - 1
        self.a_bar_prev = torch.cat([a_bar[:1], a_bar[self.timesteps[:-1]]])

    def step(self, x0: torch.Tensor, eps: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        a_prev = self.a_bar_prev[index.cpu()].view(-1, 1, 1, 1).to(eps.device)
        return a_prev.sqrt() * x0.clamp(-1, 1) + (1 - a_prev).sqrt() * eps


def boundary(t: torch.Tensor, scaling: float, sigma_data: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    """(c_skip, c_out) at timesteps t, (B, 1, 1, 1): LCMScheduler's get_scalings_for_boundary_condition_discrete."""
    s = t.float().view(-1, 1, 1, 1) * scaling
    return sigma_data ** 2 / (s ** 2 + sigma_data ** 2), s / (s ** 2 + sigma_data ** 2).sqrt()


def x0_of(x: torch.Tensor, eps: torch.Tensor, a_bar: torch.Tensor) -> torch.Tensor:
    a = a_bar.view(-1, 1, 1, 1)
    return (x - (1 - a).sqrt() * eps) / a.sqrt()


def consistency(model: FastStudent, x: torch.Tensor, t: torch.Tensor, cond_rows: torch.Tensor, a_bar: torch.Tensor,
                scaling: float) -> torch.Tensor:
    """f(x, t, w) = c_skip x + c_out x0: the model's guess of where x's trajectory ends."""
    c_skip, c_out = boundary(t, scaling)
    return c_skip * x + c_out * x0_of(x, model(x, t, cond_rows), a_bar[t])


def distillation_loss(pred: torch.Tensor, target: torch.Tensor, kind: str, huber_c: float) -> torch.Tensor:
    if kind == "l2":
        return (pred.float() - target.float()).pow(2).mean()
    if kind != "huber":
        raise ValueError(f"loss must be one of {LOSSES}, not {kind!r}")
    return ((pred.float() - target.float()).pow(2) + huber_c ** 2).sqrt().sub(huber_c).mean()


@torch.no_grad()
def teacher_target(teacher, target: FastStudent, solver: DDIMSolver, x_t, t, index, cond, w, a_bar, scaling):
    """The point the student is pulled to: one guided DDIM step of the teacher from x_t, mapped by the target net."""
    n = x_t.shape[0]
    eps_cond, eps_uncond = teacher(torch.cat([x_t, x_t]), torch.cat([t, t]),
                                   torch.cat([cond, teacher.null_condition(n).to(cond)])).chunk(2)
    ww = w.view(-1, 1, 1, 1)
    eps = (1 + ww) * eps_cond - ww * eps_uncond
    x_prev = solver.step(x0_of(x_t, eps, a_bar[t]), eps, index)
    t_prev = (t - solver.k).clamp_min(0)
    return consistency(target, x_prev, t_prev, rows(cond, w), a_bar, scaling)


def build_config(args, teacher_config, teacher_id: str) -> FastConfig:
    return FastConfig(diffusion=replace(teacher_config, training={}), teacher=teacher_id,
                      guidance_embed_dim=args.guidance_embed_dim, w_scale=args.w_scale,
                      w_range=(args.w_min, args.w_max), original_inference_steps=args.ddim_steps,
                      timestep_scaling=args.timestep_scaling)


def check_args(args) -> None:
    if not args.w_min < args.w_max:
        raise ValueError("--w-min must be below --w-max")
    if args.loss not in LOSSES:
        raise ValueError(f"--loss must be one of {LOSSES}")
    if args.export_dtype not in EXPORT_DTYPES:
        raise ValueError(f"--export-dtype must be one of {tuple(EXPORT_DTYPES)}")


def train(args) -> Path:
    check_args(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    out = Path(args.out)
    teacher, teacher_config = load_diffusion(Path(args.teacher), device)
    teacher.requires_grad_(False).eval()
    table = EmbeddingTable.load(args.embeddings)
    if table.index["clip_identity"] != teacher_config.clip_identity or table.dim != teacher_config.clip_embed_dim:
        raise CheckpointError(f"{args.embeddings} holds {table.dim}-d embeddings of {table.index['clip_identity']}; "
                              f"the teacher {args.teacher} was trained on {teacher_config.clip_identity}'s")
    ds_all = data_mod.load_training_data(args.data, 64)
    if ds_all.sources != table.index["sources"]:
        raise ValueError(f"the images in {args.data or 'the default data'} are not the ones embedded in "
                         f"{args.embeddings}; run `python -m clipdiff embed` again")
    train_rows, held_rows = data_mod.heldout_split(ds_all.splits, args.n_heldout, args.seed)
    size = teacher_config.unet.image_size
    conditions = argparse.Namespace(cond_source=teacher_config.cond_source, text_prob=args.text_prob,
                                    embedding_norm=teacher_config.embedding_norm, flip_prob=args.flip_prob)
    train_set = TrainingSet(resized_unit(ds_all.images[train_rows], size), table, train_rows, conditions)

    config = build_config(args, teacher_config, model_id_of(Path(args.teacher)))
    torch.manual_seed(args.seed)
    student, earlier = start_student(teacher, config, args.init)
    student = student.to(device)
    target = copy.deepcopy(student).requires_grad_(False)
    optimizer = torch.optim.AdamW(student.parameters(), lr=args.lr, weight_decay=0.0)
    state = load_run(out, student, optimizer, target)
    a_bar = alphas_cumprod(teacher_config.schedule).to(device)
    solver = DDIMSolver(a_bar.cpu(), args.ddim_steps)
    encoder = ClipEncoder.load(args.clip, args.clip_pretrained, device) if args.sample_every else None

    print(f"fast-mode distillation of {config.teacher} on {len(train_set)} images ({len(held_rows)} held out): "
          f"w in {args.w_min:g}..{args.w_max:g}, a {args.ddim_steps}-step DDIM grid (k = {solver.k}), {args.loss} "
          f"loss, batch {args.batch_size}, on {device}")
    log = LossLog(out / "loss.csv")
    log.truncate_after(state.step)
    timer = Timer(state.seconds)
    stop = StopRequest()
    student.train()
    bar = tqdm(range(state.step, args.max_steps), initial=state.step, total=args.max_steps, desc="fast", unit="step")
    for step in bar:
        gen = step_generator(args.seed, step)
        idx = batch_indices(len(train_set), args.batch_size, args.seed, step)
        x0, cond = train_set.batch(idx, gen)
        index = torch.randint(0, args.ddim_steps, (len(idx),), generator=gen)
        t = solver.timesteps[index]
        noise = torch.randn(x0.shape, generator=gen)
        w = args.w_min + (args.w_max - args.w_min) * torch.rand(len(idx), generator=gen)
        a = a_bar.cpu()[t].view(-1, 1, 1, 1)
        x_t = a.sqrt() * x0 + (1 - a).sqrt() * noise       # q(x_t | x0), as DDPMScheduler.add_noise
        x_t, t, cond, w, index = (v.to(device) for v in (x_t, t, cond, w, index))
        position = schedule_position(step, timer.seconds, args.max_steps, args.max_seconds)
        lr = args.lr * lr_factor(step, args.warmup_steps, args.max_steps, position=position)
        set_lr(optimizer, lr)
        goal = teacher_target(teacher, target, solver, x_t, t, index.cpu(), cond, w, a_bar, args.timestep_scaling)
        pred = consistency(student, x_t, t, rows(cond, w), a_bar, args.timestep_scaling)
        loss = distillation_loss(pred, goal, args.loss, args.huber_c)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
        optimizer.step()
        ema_update(target, student, args.ema_decay)
        done = step + 1
        last = done == args.max_steps or out_of_time(timer.seconds, args.max_seconds) or stop.requested
        log.append(done, loss.item(), lr, timer.seconds)
        bar.set_postfix(loss=f"{loss.item():.4f}",
                        img_s=f"{args.batch_size * (done - state.step) / max(timer.seconds - state.seconds, 1e-9):.0f}")
        if done % args.save_every == 0 or last:
            save_run(out, RunState(done, timer.seconds), student, optimizer, target, args=vars(args))
            log.plot(out / "loss.png", "fast mode: consistency distillation loss")
        if args.sample_every and not stop.requested and (done % args.sample_every == 0 or last):
            sample_grid(encoder, teacher, teacher_config, target.eval(), config, args.sample_steps,
                        out / "samples" / f"step_{done:06d}.png")
            target.train()
        if last:
            break
    stop.restore()

    done = read_json(out / "state.json")["step"]
    hardware = f"{device}, {torch.get_num_threads()} torch thread(s)"
    if earlier:
        hardware = f"{earlier['hardware']}; then {done:,} steps continued on {hardware}"
    config.training = {"steps": earlier.get("steps", 0) + done, "batch_size": args.batch_size,
                       "images_seen": earlier.get("images_seen", 0) + done * args.batch_size,
                       "train_seconds": round(earlier.get("train_seconds", 0) + timer.seconds),
                       "train_images": len(train_set),
                       "heldout_images": len(held_rows), "embeddings": describe_path(args.embeddings),
                       "teacher": describe_path(args.teacher), "loss": args.loss, "huber_c": args.huber_c,
                       "lr": args.lr, "ema_decay": args.ema_decay, "ddim_steps": args.ddim_steps,
                       "w_range": [args.w_min, args.w_max], "export_dtype": args.export_dtype, "seed": args.seed,
                       "hardware": hardware}
    save_fast(target.eval(), config, Path(args.export), EXPORT_DTYPES[args.export_dtype])
    print(f"exported the student (the target network) to {args.export}")
    return Path(args.export)


def start_student(teacher, config: FastConfig, init: str | None) -> tuple[FastStudent, dict]:
    """The student a run starts from, and the training record of what it continues ({} for a fresh start): the
    teacher's weights (FastStudent.from_teacher), or an exported student's, which must be of this teacher and
    guidance embedding."""
    if not init:
        return FastStudent.from_teacher(teacher, config), {}
    student, earlier = load_fast(Path(init))
    mismatched = [key for key in ("teacher", "guidance_embed_dim", "w_scale", "w_range", "original_inference_steps",
                                  "timestep_scaling") if getattr(earlier, key) != getattr(config, key)]
    if mismatched:
        raise CheckpointError(f"the student in {init} differs from this run in {', '.join(mismatched)}: "
                              "start from the teacher (no --init) or pass its settings")
    return student.train(), dict(earlier.training)


def sample_grid(encoder: ClipEncoder, teacher, teacher_config, student: FastStudent, config: FastConfig, steps: int,
                path: Path) -> Path:
    """The reference prompts x SAMPLE_WS, one seed, in the fast mode: the picture to watch during training."""
    pipe = ClipDiffusionPipeline(encoder, teacher, teacher_config, config.teacher).use_student(student, config,
                                                                                               "training")
    result = pipe.generate(sweep(list(REFERENCE_PROMPTS), list(SAMPLE_WS), seed=0), steps=steps, sampler=FAST_SAMPLER)
    grid = labelled_grid(to_uint8(result.images), rows=len(SAMPLE_WS), cols=len(REFERENCE_PROMPTS),
                         row_labels=[f"w = {w:g}" for w in SAMPLE_WS], col_labels=list(REFERENCE_PROMPTS))
    path.parent.mkdir(parents=True, exist_ok=True)
    grid.save(path)
    return path


def model_card_section(folder: Path = DEFAULT_FAST_DIR) -> str:
    """The model card's part on the shipped student (train_default.write_model_card puts it in): how it was made,
    from its config, and its figures beside the teacher's (claims.fast_table). Empty where none is shipped."""
    from .. import claims

    if not (folder / "config.json").is_file():
        return ""
    c, figures = read_json(folder / "config.json"), claims.fast_claims()
    tr, w_lo, w_hi = c["training"], *c["w_range"]
    table = "\n".join(claims.fast_table(*figures)) if figures else "(not measured yet)"
    return f"""
## fast mode's student (`fast/`, opt-in)
A student distilled from `{c["teacher"]}` with w as an input (`app.py --fast`, `python -m clipdiff sample --sampler
fast`): the teacher's U-Net plus a linear map of a {c["guidance_embed_dim"]}-sinusoid embedding of w x {c["w_scale"]:g} into
its timestep embedding (diffusers' `time_cond_proj_dim` / `timestep_cond`), started from the teacher's weights with
that map at zero. Weights in {tr["export_dtype"]} safetensors; sampled by diffusers' `LCMScheduler`, 1-8 steps (4 by
default), one forward a step.
- consistency distillation (`python -m clipdiff train-fast`, as diffusers' LCM distillation example): the teacher's
  guided eps = (1 + w) eps_cond - w eps_uncond (its learned null as the unconditional) takes one DDIM step on a
  {c["original_inference_steps"]}-step skipped grid, an EMA target ({tr["ema_decay"]}) of the student maps that point to its end, and
  the student is pulled there ({tr["loss"]} loss, c {tr["huber_c"]}); w uniform in {w_lo:g}..{w_hi:g} (the fast mode
  refuses other w)
- {tr["steps"]:,} steps of batch {tr["batch_size"]} ({tr["images_seen"]:,} images seen), lr {tr["lr"]}, {tr["train_seconds"] / 60:.0f} min on {tr["hardware"]}; the target network ships

Beside its teacher at the app's default sampler, measured in one run each (`eval-gen --species 8 --species-w 2
--w 2 --fast`, 102 species prompts x 8 images at w = 2; `bench --fast`, the same machine):

{table}

How much w changes its pictures, against the teacher, and how its w range and fp16 weights were chosen:
`benchmarks/README.md`, Fast mode. It never makes the conditional and unconditional predictions apart, so negative
prompts, prompt editing, photo edits and the denoising playback need the teacher (the app and the CLI refuse them
in words).
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="clipdiff train-fast", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_defaults_to_parser(parser, fast_defaults())
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        check_args(args)
    except ValueError as e:
        build_parser().error(str(e))
    train(args)


if __name__ == "__main__":
    main()
