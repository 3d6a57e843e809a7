"""Train the embedded flowers CLIP: an open_clip architecture, open_clip's contrastive loss, flower captions.

    python -m clipdiff train-clip --data ../shared/data --out runs/clip --export checkpoints/clip

Each image is paired per step with one of its human captions or, with --species-caption-prob, one
species-name caption ("a photo of a sunflower, a type of flower."); caption-less image folders use the
species captions only. The run resumes from --out if it was stopped.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import open_clip
import torch
import torch.nn.functional as F
from open_clip.loss import ClipLoss
from tqdm.auto import tqdm

from . import data as data_mod
from .checkpoints import DEFAULT_CLIP_DIR, atomic_save_json, atomic_save_safetensors
from .encoders import OPEN_CLIP_CONFIG, OPEN_CLIP_WEIGHTS, normalize_pixels
from .training import (LossLog, RunState, Timer, add_defaults_to_parser, batch_indices, load_run, lr_factor,
                       save_run, set_lr, step_generator)


def clip_defaults() -> dict:
    return dict(
        data=None,                 # ../shared/data (Oxford-102 + flowers5), or a captions.jsonl / image folder
        out="runs/clip",
        export=str(DEFAULT_CLIP_DIR),
        image_size=64, patch_size=8, vision_width=192, vision_layers=4,
        text_width=192, text_layers=3, context_length=77, embed_dim=256,
        batch_size=256, lr=1e-3, weight_decay=0.1, warmup_steps=50, max_steps=600,
        species_caption_prob=0.25, crop_scale_min=0.7,
        n_heldout=1000, seed=0, save_every=50, threads=0,
    )


def model_config(args) -> dict:
    """The open_clip model config (the same dict open_clip's own model_configs/*.json hold)."""
    return {
        "embed_dim": args.embed_dim,
        "vision_cfg": {"image_size": args.image_size, "layers": args.vision_layers, "width": args.vision_width,
                       "patch_size": args.patch_size, "head_width": 64},
        "text_cfg": {"context_length": args.context_length, "vocab_size": 49408, "width": args.text_width,
                     "heads": max(args.text_width // 64, 1), "layers": args.text_layers},
    }


def augment(images: np.ndarray, size: int, scale_min: float, gen: torch.Generator) -> torch.Tensor:
    """Random square crops (scale_min..1 of the side) resized back, and horizontal flips; -> [0, 1] floats."""
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    n, _, h, _ = x.shape
    scales = scale_min + (1 - scale_min) * torch.rand(n, generator=gen)
    out = torch.empty(n, 3, size, size)
    for i in range(n):
        c = max(int(h * scales[i]), 8)
        top, left = (torch.randint(0, h - c + 1, (2,), generator=gen)).tolist()
        crop = x[i:i + 1, :, top:top + c, left:left + c]
        out[i] = F.interpolate(crop, size=(size, size), mode="bilinear", antialias=True, align_corners=False)[0]
    flip = torch.rand(n, generator=gen) < 0.5
    out[flip] = out[flip].flip(-1)
    return out


def pick_captions(ds: data_mod.ImageSet, idx: np.ndarray, species_prob: float, gen: torch.Generator) -> list[str]:
    texts = []
    for i in idx:
        human = ds.captions[i]
        species = data_mod.species_captions(ds.class_names[ds.labels[i]])
        use_species = not human or torch.rand(1, generator=gen).item() < species_prob
        pool = species if use_species else human
        texts.append(pool[torch.randint(len(pool), (1,), generator=gen).item()])
    return texts


def export_clip(model: torch.nn.Module, cfg: dict, export_dir: Path, card: dict) -> None:
    """float16 safetensors + open_clip_config.json: loadable as open_clip's 'local-dir:' model."""
    state = {k: v.half() if v.is_floating_point() else v for k, v in model.state_dict().items()}
    atomic_save_safetensors(state, export_dir / OPEN_CLIP_WEIGHTS)
    atomic_save_json({"model_cfg": cfg, "preprocess_cfg": dict(model.visual.preprocess_cfg)},
                     export_dir / OPEN_CLIP_CONFIG)
    atomic_save_json(card, export_dir / "training.json")


def train(args) -> Path:
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    cfg = model_config(args)
    torch.manual_seed(args.seed)
    model = open_clip.CLIP(**cfg, output_dict=True)
    open_clip.factory.set_model_preprocess_cfg(model, {"size": args.image_size, "mean": open_clip.OPENAI_DATASET_MEAN,
                                                        "std": open_clip.OPENAI_DATASET_STD})
    tokenizer = open_clip.tokenize  # the CLIP BPE vocabulary that ships with open_clip
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embedding" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embedding" not in n)]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=args.lr, betas=(0.9, 0.98), eps=1e-6)
    loss_fn = ClipLoss()

    ds_all = data_mod.load_training_data(args.data, args.image_size)
    train_idx, held_idx = data_mod.heldout_split(ds_all.splits, args.n_heldout, args.seed)
    ds = ds_all.subset(train_idx)
    print(f"CLIP training on {len(ds)} images ({len(held_idx)} held out), {len(ds.class_names)} species, "
          f"{sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters")

    state = load_run(out, model, optimizer)
    log = LossLog(out / "loss.csv")
    log.truncate_after(state.step)
    timer = Timer(state.seconds)
    model.train()
    bar = tqdm(range(state.step, args.max_steps), initial=state.step, total=args.max_steps, desc="CLIP", unit="step")
    for step in bar:
        gen = step_generator(args.seed, step)
        idx = batch_indices(len(ds), args.batch_size, args.seed, step)
        images = normalize_pixels(augment(ds.images[idx], args.image_size, args.crop_scale_min, gen), model)
        texts = tokenizer(pick_captions(ds, idx, args.species_caption_prob, gen), context_length=args.context_length)
        lr = args.lr * lr_factor(step, args.warmup_steps, args.max_steps)
        set_lr(optimizer, lr)
        outputs = model(images, texts)
        loss = loss_fn(outputs["image_features"], outputs["text_features"], outputs["logit_scale"])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        with torch.no_grad():  # CLIP's clamp of the learned temperature at 100
            model.logit_scale.clamp_(0, np.log(100))
        log.append(step + 1, loss.item(), lr, timer.seconds)
        bar.set_postfix(loss=f"{loss.item():.3f}", img_s=f"{args.batch_size * (step + 1 - state.step) / max(timer.seconds - state.seconds, 1e-9):.0f}")
        if (step + 1) % args.save_every == 0 or step + 1 == args.max_steps:
            save_run(out, RunState(step + 1, timer.seconds), model, optimizer, args=vars(args))
            log.plot(out / "loss.png", "flowers CLIP: contrastive loss")
    state = RunState(args.max_steps, timer.seconds)

    card = {"architecture": cfg, "steps": state.step, "batch_size": args.batch_size,
            "train_seconds": round(state.seconds), "train_images": len(ds), "heldout_images": len(held_idx),
            "heldout_sources": [ds_all.sources[i] for i in held_idx[:5]] + ["..."],
            "split": f"{len(held_idx)} images drawn with seed {args.seed} from Oxford-102's official test split are "
                     "held out; all other Oxford-102 images and flowers5 train",
            "args": {k: v for k, v in vars(args).items() if k not in ("out", "export")}}
    model.eval()
    export_clip(model, cfg, Path(args.export), card)
    print(f"exported CLIP to {args.export}")
    return Path(args.export)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="clipdiff train-clip", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_defaults_to_parser(parser, clip_defaults())
    train(parser.parse_args(argv))


if __name__ == "__main__":
    main()
