"""Train the diffusion U-Net on precomputed CLIP embeddings, with context dropout and EMA weights.

    python -m clipdiff train-unet --embeddings runs/embeddings --out runs/unet --export checkpoints/unet
    accelerate launch -m clipdiff.train_unet ...        # the same script on several GPUs

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
import torch.nn.functional as F
from accelerate import Accelerator
from tqdm.auto import tqdm

from . import data as data_mod
from .checkpoints import DEFAULT_UNET_DIR
from .diffusion import DiffusionConfig, condition, save_diffusion
from .embed import EmbeddingTable
from .encoders import ClipEncoder
from .images import labelled_grid
from .pipeline import REFERENCE_PROMPTS, REFERENCE_WS, ClipDiffusionPipeline, sweep
from .sampling import to_uint8
from .schedulers import NoiseSchedule, make_scheduler
from .training import (LossLog, RunState, Timer, add_defaults_to_parser, batch_indices, ema_update, load_run,
                       lr_factor, save_run, set_lr, step_generator)
from .unet import ConditionalUNet, UNetConfig


def unet_defaults() -> dict:
    return dict(
        data=None,                      # the images the embeddings were computed from (same order)
        embeddings="runs/embeddings",
        out="runs/unet",
        export=str(DEFAULT_UNET_DIR),
        clip="default", clip_pretrained=None,
        image_size=32, block_out_channels=[32, 64, 128], layers_per_block=1, attention_levels=[0, 0, 1],
        attention_head_dim=32, norm_num_groups=16,
        null_mode="learned", cond_drop_prob=0.1, cond_source="mix", text_prob=0.5, embedding_norm="l2",
        num_train_timesteps=400, beta_start=1e-4, beta_end=0.02,
        batch_size=64, lr=1e-3, warmup_steps=200, max_steps=4000, ema_decay=0.999,
        seed=0, save_every=250, sample_every=500, sample_steps=25, n_heldout=1000, threads=0,
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


def downsample(images: np.ndarray, size: int) -> torch.Tensor:
    """uint8 (N, S, S, 3) -> float (N, 3, size, size) in [-1, 1], antialiased."""
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1
    if x.shape[-1] != size:
        x = torch.cat([F.interpolate(x[s:s + 1024], size=(size, size), mode="bilinear", antialias=True)
                       for s in range(0, len(x), 1024)])
    return x.clamp(-1, 1)


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

    def __len__(self) -> int:
        return len(self.rows)

    def batch(self, idx: np.ndarray, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        rows = self.rows[idx]
        x0 = self.images[idx]
        flip = torch.rand(len(idx), generator=gen) < 0.5
        x0 = torch.where(flip[:, None, None, None], x0.flip(-1), x0)
        emb = torch.where(flip[:, None], self.image_flip_emb[rows], self.image_emb[rows])
        if self.cond_source != "image":
            use_text = torch.rand(len(idx), generator=gen) < (1.0 if self.cond_source == "text" else self.text_prob)
            for k, r in enumerate(rows):
                captions = self.table.caption_rows(int(r))
                if use_text[k] and len(captions):
                    emb[k] = self.text_emb[int(captions[torch.randint(len(captions), (1,), generator=gen)])]
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


def train(args) -> Path:
    if args.threads:
        torch.set_num_threads(args.threads)
    accelerator = Accelerator()
    out = Path(args.out)
    table = EmbeddingTable.load(args.embeddings)
    config = build_config(args, table)
    ds_all = data_mod.load_training_data(args.data, 64 if args.image_size <= 64 else args.image_size)
    if ds_all.sources != table.index["sources"]:
        raise ValueError(f"the images in {args.data or 'the default data'} are not the ones embedded in "
                         f"{args.embeddings}; run `python -m clipdiff embed` again")
    train_rows, held_rows = data_mod.heldout_split(ds_all.splits, args.n_heldout, args.seed)
    train_set = TrainingSet(downsample(ds_all.images[train_rows], args.image_size), table, train_rows, args)

    torch.manual_seed(args.seed)
    model = ConditionalUNet(config.unet)
    ema_model = copy.deepcopy(model).requires_grad_(False)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0)
    state = load_run(out, model, optimizer, ema_model)
    model, optimizer = accelerator.prepare(model, optimizer)
    ema_model.to(accelerator.device)
    noise_scheduler = make_scheduler("ddpm", config.schedule)
    encoder = ClipEncoder.load(args.clip, args.clip_pretrained, device=accelerator.device) \
        if accelerator.is_main_process and args.sample_every else None

    main = accelerator.is_main_process
    if main:
        print(f"U-Net training on {len(train_set)} images ({len(held_rows)} held out), "
              f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters, cond source {args.cond_source}, "
              f"{accelerator.num_processes} process(es) on {accelerator.device}")
    log = LossLog(out / "loss.csv")
    if main:
        log.truncate_after(state.step)
    timer = Timer(state.seconds)
    world, rank = accelerator.num_processes, accelerator.process_index
    model.train()
    bar = tqdm(range(state.step, args.max_steps), initial=state.step, total=args.max_steps, desc="U-Net",
               unit="step", disable=not main)
    T = config.schedule.num_train_timesteps
    for step in bar:
        gen = step_generator(args.seed, step * world + rank)
        idx = batch_indices(len(train_set), args.batch_size * world, args.seed, step)[rank::world]
        x0, cond = train_set.batch(idx, gen)
        cond = accelerator.unwrap_model(model).drop_condition(cond, gen)
        t = torch.randint(0, T, (len(idx),), generator=gen)
        noise = torch.randn(x0.shape, generator=gen)
        x_t = noise_scheduler.add_noise(x0, noise, t)
        lr = args.lr * lr_factor(step, args.warmup_steps, args.max_steps)
        set_lr(optimizer, lr)
        dev = accelerator.device
        loss = F.mse_loss(model(x_t.to(dev), t.to(dev), cond.to(dev)), noise.to(dev))
        optimizer.zero_grad(set_to_none=True)
        accelerator.backward(loss)
        accelerator.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        ema_update(ema_model, accelerator.unwrap_model(model), min(args.ema_decay, (1 + step) / (10 + step)))
        done = step + 1
        if main:
            log.append(done, loss.item(), lr, timer.seconds)
            bar.set_postfix(loss=f"{loss.item():.4f}",
                            img_s=f"{args.batch_size * world * (done - state.step) / max(timer.seconds - state.seconds, 1e-9):.0f}")
        if done % args.save_every == 0 or done == args.max_steps:
            accelerator.wait_for_everyone()
            if main:
                save_run(out, RunState(done, timer.seconds), accelerator.unwrap_model(model), optimizer, ema_model,
                         args=vars(args))
                log.plot(out / "loss.png", "diffusion U-Net: noise-prediction MSE")
        if main and encoder is not None and (done % args.sample_every == 0 or done == args.max_steps):
            sample_grid(encoder, ema_model.eval(), config, args.sample_steps, out / "samples" / f"step_{done:06d}.png",
                        f"step {done}")
            ema_model.train()

    if main:
        config.training = {"steps": args.max_steps, "batch_size": args.batch_size * world,
                           "train_seconds": round(timer.seconds), "train_images": len(train_set),
                           "heldout_images": len(held_rows), "embeddings": str(args.embeddings),
                           "ema_decay": args.ema_decay, "lr": args.lr, "seed": args.seed}
        save_diffusion(ema_model.eval(), config, Path(args.export))
        print(f"exported the EMA U-Net to {args.export}")
    return Path(args.export)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="clipdiff train-unet", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_defaults_to_parser(parser, unet_defaults())
    train(parser.parse_args(argv))


if __name__ == "__main__":
    main()
