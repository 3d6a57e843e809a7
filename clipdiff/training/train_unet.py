"""Train the diffusion U-Net on precomputed CLIP embeddings, with context dropout and EMA weights.

    python -m clipdiff train-unet --embeddings runs/embeddings --out runs/unet --export checkpoints/unet
    accelerate launch -m clipdiff.training.train_unet ...   # the same script on several GPUs

The loop runs under Hugging Face Accelerate: one CPU here, any number of GPUs with `accelerate launch`
(each process takes its slice of every global batch). Stopped runs resume from --out with the same
data order and random draws, and every --sample-every steps a grid of the reference prompts x guidance
weights shows how far the model has come.
"""
from __future__ import annotations

import argparse
import copy
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from tqdm.auto import tqdm

from .. import data as data_mod
from ..checkpoints import DEFAULT_UNET_DIR, CheckpointError, describe_path, read_json
from ..devices import resolve_device
from ..diffusion import DiffusionConfig, condition, load_diffusion, save_diffusion
from ..embed import EmbeddingTable
from ..encoders import ClipEncoder
from ..images import labelled_grid, resized_unit
from ..pipeline import REFERENCE_PROMPTS, REFERENCE_WS, ClipDiffusionPipeline, sweep
from ..sampling import to_uint8
from ..schedulers import NoiseSchedule, make_scheduler
from .common import (LossLog, MetricLog, RunState, StopRequest, Timer, add_defaults_to_parser, autocast, batch_indices,
                       ema_update, fast_float32, load_run, lr_factor, out_of_time, save_run, schedule_position, set_lr,
                       step_generator)
from .yardstick import YARDSTICK_KEYS
from ..unet import ConditionalUNet, UNetConfig


def unet_defaults() -> dict:
    diffusion = DiffusionConfig()
    unet, schedule = diffusion.unet, diffusion.schedule
    return dict(
        data=None,                      # the images the embeddings were computed from (same order)
        embeddings="runs/embeddings",
        out="runs/unet",
        export=str(DEFAULT_UNET_DIR),
        clip="default", clip_pretrained=None,
        # The architecture, schedule and conditioning defaults are the model configs' own (one home each).
        image_size=unet.image_size, block_out_channels=list(unet.block_out_channels),
        layers_per_block=unet.layers_per_block, attention_levels=[int(a) for a in unet.attention_levels],
        attention_head_dim=unet.attention_head_dim, norm_num_groups=unet.norm_num_groups,
        null_mode=unet.null_mode, cond_drop_prob=unet.cond_drop_prob, cond_source=diffusion.cond_source,
        text_prob=0.5, embedding_norm=diffusion.embedding_norm,
        num_train_timesteps=schedule.num_train_timesteps, beta_start=schedule.beta_start, beta_end=schedule.beta_end,
        batch_size=64, lr=1e-3, warmup_steps=200, max_steps=8000, ema_decay=0.999,
        loss_weighting="min-snr", snr_gamma=5.0, flip_prob=0.5, precision="fp32",
        max_seconds=0.0,                # > 0: a time-boxed run; the cosine schedule ends when the time does
        init_from=None,                 # an exported diffusion checkpoint to start from (same architecture)
        yardstick=None, eval_every=0, eval_per_species=4,   # species-prompt yardstick during training
        seed=0, save_every=250, sample_every=500, sample_steps=25, n_heldout=1000, threads=0,
        device="auto",                  # one process: cpu, cuda, or auto (a GPU when there is one); accelerate launch
                                        # decides for several
    )


def build_config(args, table: EmbeddingTable) -> DiffusionConfig:
    unet = UNetConfig(image_size=args.image_size, cond_dim=table.dim,
                      block_out_channels=tuple(args.block_out_channels), layers_per_block=args.layers_per_block,
                      attention_levels=tuple(bool(a) for a in args.attention_levels),
                      attention_head_dim=args.attention_head_dim, norm_num_groups=args.norm_num_groups,
                      null_mode=args.null_mode, cond_drop_prob=args.cond_drop_prob)
    schedule = NoiseSchedule(args.num_train_timesteps, args.beta_start, args.beta_end)
    return DiffusionConfig(unet=unet, schedule=schedule, clip_identity=table.index["clip_identity"],
                           clip_embed_dim=table.dim, embedding_norm=args.embedding_norm, cond_source=args.cond_source)


class TrainingSet:
    """Pixels and conditions of the training images, and the draw of one batch's conditions."""

    def __init__(self, images: torch.Tensor, table: EmbeddingTable, rows: np.ndarray, args):
        self.images = images
        self.rows = rows                       # row in the embedding table of each training image
        self.image_emb = torch.from_numpy(table.image.astype(np.float32))
        self.image_flip_emb = torch.from_numpy(table.image_flip.astype(np.float32))
        self.text_emb = torch.from_numpy(table.text.astype(np.float32))
        self.table = table
        self.cond_source = args.cond_source
        self.text_prob = args.text_prob
        self.norm = args.embedding_norm
        self.flip_prob = args.flip_prob

    def __len__(self) -> int:
        return len(self.rows)

    def batch(self, idx: np.ndarray, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        rows = self.rows[idx]
        x0 = self.images[idx]
        flip = torch.rand(len(idx), generator=gen) < self.flip_prob
        x0 = torch.where(flip[:, None, None, None], x0.flip(-1), x0)
        emb = torch.where(flip[:, None], self.image_flip_emb[rows], self.image_emb[rows])
        if self.cond_source != "image":
            use_text = torch.rand(len(idx), generator=gen) < (1.0 if self.cond_source == "text" else self.text_prob)
            first = torch.from_numpy(self.table.text_offsets[rows])
            count = torch.from_numpy(self.table.text_offsets[rows + 1]) - first
            pick = first + (torch.rand(len(idx), generator=gen) * count).long().clamp_max((count - 1).clamp_min(0))
            use_text &= count > 0
            if use_text.any():
                caption_rows = torch.from_numpy(self.table.text_index.astype(np.int64))[pick[use_text]]
                emb[use_text] = self.text_emb[caption_rows]
        return x0, condition(emb, self.norm)


def sample_grid(encoder: ClipEncoder, model: ConditionalUNet, config: DiffusionConfig, steps: int, path: Path,
                title: str = "") -> Path:
    """The reference prompts x the reference w values, one seed: the picture to watch during training."""
    pipe = ClipDiffusionPipeline(encoder, model, config, title or "training")
    jobs = sweep(list(REFERENCE_PROMPTS), list(REFERENCE_WS), seed=0)
    result = pipe.generate(jobs, steps=steps, sampler="ddim")
    grid = labelled_grid(to_uint8(result.images), rows=len(REFERENCE_WS), cols=len(REFERENCE_PROMPTS),
                         row_labels=[f"w = {w:g}" for w in REFERENCE_WS], col_labels=list(REFERENCE_PROMPTS))
    path.parent.mkdir(parents=True, exist_ok=True)
    grid.save(path)
    return path


def noise_loss(pred: torch.Tensor, noise: torch.Tensor, t: torch.Tensor, schedule_snr: torch.Tensor,
               weighting: str, gamma: float) -> torch.Tensor:
    """The noise-prediction MSE, per sample weighted by min(SNR(t), gamma) / SNR(t) under "min-snr"
    (Hang et al. 2023, "Efficient Diffusion Training via Min-SNR Weighting Strategy", for eps-prediction):
    it stops the many easy low-noise timesteps from dominating the gradient."""
    per_sample = (pred.float() - noise.float()).pow(2).mean(dim=(1, 2, 3))
    if weighting == "mse":
        return per_sample.mean()
    if weighting != "min-snr":
        raise ValueError(f"loss_weighting must be 'mse' or 'min-snr', not {weighting!r}")
    snr = schedule_snr.to(t.device)[t]
    return (per_sample * snr.clamp_max(gamma) / snr).mean()


def build_models(args, config: DiffusionConfig) -> tuple[ConditionalUNet, ConditionalUNet]:
    """The U-Net (fresh, or the weights of --init-from) and its EMA copy."""
    torch.manual_seed(args.seed)
    model = ConditionalUNet(config.unet)
    if args.init_from:
        start, start_config = load_diffusion(Path(args.init_from))
        if start_config.unet != config.unet:
            raise CheckpointError(f"--init-from {args.init_from} has another U-Net architecture than this run's flags")
        model.load_state_dict(start.state_dict())
    return model, copy.deepcopy(model).requires_grad_(False)


def train(args) -> Path:
    if args.threads:
        torch.set_num_threads(args.threads)
    accelerator = Accelerator(cpu=resolve_device(args.device).type == "cpu")
    out = Path(args.out)
    table = EmbeddingTable.load(args.embeddings)
    config = build_config(args, table)
    ds_all = data_mod.load_training_data(args.data, 64 if args.image_size <= 64 else args.image_size)
    if ds_all.sources != table.index["sources"]:
        raise ValueError(f"the images in {args.data or 'the default data'} are not the ones embedded in "
                         f"{args.embeddings}; run `python -m clipdiff embed` again")
    train_rows, held_rows = data_mod.heldout_split(ds_all.splits, args.n_heldout, args.seed)
    train_set = TrainingSet(resized_unit(ds_all.images[train_rows], args.image_size), table, train_rows, args)

    model, ema_model = build_models(args, config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0)
    state = load_run(out, model, optimizer, ema_model)
    model, optimizer = accelerator.prepare(model, optimizer)
    ema_model.to(accelerator.device)
    fast_float32(accelerator.device)
    noise_scheduler = make_scheduler("ddpm", config.schedule)
    alphas = noise_scheduler.alphas_cumprod.float()
    snr = alphas / (1 - alphas)
    main = accelerator.is_main_process
    encoder = ClipEncoder.load(args.clip, args.clip_pretrained, device=accelerator.device) \
        if main and (args.sample_every or args.eval_every) else None
    watcher = TrainingWatch(args, encoder, config, ds_all, held_rows, out) if main else None

    if main:
        print(f"U-Net training on {len(train_set)} images ({len(held_rows)} held out), "
              f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters, cond source {args.cond_source}, "
              f"{args.loss_weighting} loss, {args.precision}, {accelerator.num_processes} process(es) on "
              f"{accelerator.device}")
    log = LossLog(out / "loss.csv")
    if main:
        log.truncate_after(state.step)
        watcher.truncate_after(state.step)
    timer = Timer(state.seconds)
    stop = StopRequest()
    world, rank = accelerator.num_processes, accelerator.process_index
    model.train()
    dev = accelerator.device
    bar = tqdm(range(state.step, args.max_steps), initial=state.step, total=args.max_steps, desc="U-Net",
               unit="step", disable=not main)
    T = config.schedule.num_train_timesteps
    for step in bar:
        gen = step_generator(args.seed, step * world + rank)
        idx = batch_indices(len(train_set), args.batch_size * world, args.seed, step)[rank::world]
        x0, cond = train_set.batch(idx, gen)
        cond = accelerator.unwrap_model(model).drop_condition(cond.to(dev), gen)
        t = torch.randint(0, T, (len(idx),), generator=gen)
        noise = torch.randn(x0.shape, generator=gen)
        x_t = noise_scheduler.add_noise(x0, noise, t)
        position = schedule_position(step, timer.seconds, args.max_steps, args.max_seconds)
        lr = args.lr * lr_factor(step, args.warmup_steps, args.max_steps, position=position)
        set_lr(optimizer, lr)
        t, noise = t.to(dev), noise.to(dev)
        with autocast(dev, args.precision):
            pred = model(x_t.to(dev), t, cond)
        loss = noise_loss(pred, noise, t, snr, args.loss_weighting, args.snr_gamma)
        optimizer.zero_grad(set_to_none=True)
        accelerator.backward(loss)
        accelerator.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        ema_update(ema_model, accelerator.unwrap_model(model), min(args.ema_decay, (1 + step) / (10 + step)))
        done = step + 1
        last = done == args.max_steps or out_of_time(timer.seconds, args.max_seconds) or stop.requested
        if world > 1:   # every process stops at the same step
            last = bool(accelerator.reduce(torch.tensor(float(last), device=dev), "max").item())
        if main:
            log.append(done, loss.item(), lr, timer.seconds)
            bar.set_postfix(loss=f"{loss.item():.4f}",
                            img_s=f"{args.batch_size * world * (done - state.step) / max(timer.seconds - state.seconds, 1e-9):.0f}")
        if done % args.save_every == 0 or last:
            accelerator.wait_for_everyone()
            if main:
                save_run(out, RunState(done, timer.seconds), accelerator.unwrap_model(model), optimizer, ema_model,
                         args=vars(args))
                log.plot(out / "loss.png", "diffusion U-Net: noise-prediction loss")
        if main and not stop.requested:   # a stopped run exports at once: its stopper waits only seconds
            watcher.after_step(ema_model, done, done * args.batch_size * world, timer.seconds, last)
        if last:
            break
    stop.restore()

    if main:
        done = read_json(out / "state.json")["step"]
        config.training = {"steps": done, "batch_size": args.batch_size * world,
                           "images_seen": done * args.batch_size * world,
                           "train_seconds": round(timer.seconds), "train_images": len(train_set),
                           "heldout_images": len(held_rows), "embeddings": describe_path(args.embeddings),
                           "init_from": describe_path(args.init_from), "ema_decay": args.ema_decay, "lr": args.lr,
                           "loss_weighting": args.loss_weighting, "snr_gamma": args.snr_gamma,
                           "flip_prob": args.flip_prob, "precision": args.precision, "seed": args.seed}
        save_diffusion(ema_model.eval(), config, Path(args.export))
        print(f"exported the EMA U-Net to {args.export}")
    return Path(args.export)


class TrainingWatch:
    """What the main process shows while training: the reference grid every --sample-every steps, and the
    species-prompt yardstick every --eval-every steps (yardstick.csv: the quality curve against images seen)."""

    def __init__(self, args, encoder, config: DiffusionConfig, ds_all, held_rows, out: Path):
        self.args, self.encoder, self.config, self.out = args, encoder, config, out
        self.curve = MetricLog(out / "yardstick.csv")
        self.judge = None
        if args.eval_every:
            from .yardstick import SpeciesJudge, Yardstick
            self.judge = SpeciesJudge(Yardstick.load(args.yardstick), ds_all, held_rows, args.image_size)

    def truncate_after(self, step: int) -> None:
        self.curve.truncate_after(step)

    def after_step(self, ema_model: ConditionalUNet, done: int, images_seen: int, seconds: float, last: bool) -> None:
        args = self.args
        if args.sample_every and (done % args.sample_every == 0 or last):
            sample_grid(self.encoder, ema_model.eval(), self.config, args.sample_steps,
                        self.out / "samples" / f"step_{done:06d}.png", f"step {done}")
            ema_model.train()
        if self.judge is not None and (done % args.eval_every == 0 or last):
            pipe = ClipDiffusionPipeline(self.encoder, ema_model.eval(), self.config, f"step {done}")
            figures = self.judge.judge(pipe, n_per_species=args.eval_per_species)
            ema_model.train()
            self.curve.append(done, images_seen, seconds, {k: v for k, v in figures.items() if k in YARDSTICK_KEYS})


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="clipdiff train-unet", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_defaults_to_parser(parser, unet_defaults())
    return parser


def main(argv=None):
    train(build_parser().parse_args(argv))


if __name__ == "__main__":
    main()
