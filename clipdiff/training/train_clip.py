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
from open_clip.loss import ClipLoss
from tqdm.auto import tqdm

from .. import data as data_mod
from ..checkpoints import (DEFAULT_CLIP_DIR, atomic_save_json, atomic_save_safetensors, describe_path,
                          load_state_dict_checked, read_safetensors)
from ..devices import resolve_device
from ..encoders import OPEN_CLIP_CONFIG, OPEN_CLIP_WEIGHTS, ClipEncoder, normalize_pixels
from ..evaluate import evaluate_clip
from ..sampling import from_uint8
from .common import (LossLog, MetricLog, RunState, StopRequest, Timer, add_defaults_to_parser, autocast, batch_indices,
                       fast_float32, load_run, lr_factor, out_of_time, random_resized_crop_flip, save_run, schedule_position,
                       set_lr, step_generator)


def clip_defaults() -> dict:
    return dict(
        data=None,                 # ../shared/data (Oxford-102 + flowers5), or a captions.jsonl / image folder
        out="runs/clip",
        export=str(DEFAULT_CLIP_DIR),
        init_from=None,            # an exported CLIP folder to start from (same architecture)
        # a convolutional tower learns more per image than a small ViT here (benchmarks/recipes.md)
        image_size=64, vision_tower="resnet",
        patch_size=8, vision_width=192, vision_layers=4,          # --vision-tower vit
        resnet_width=32, resnet_layers=[1, 1, 1, 1],              # --vision-tower resnet (open_clip ModifiedResNet)
        text_width=192, text_layers=3, context_length=77, embed_dim=256,
        batch_size=256, lr=5e-4, weight_decay=0.1, warmup_steps=50, max_steps=2000, temperature=0.07,
        species_caption_prob=0.25, crop_scale_min=0.7, flip_prob=0.5,
        precision="fp32", device="auto",
        max_seconds=0.0,           # > 0: a time-boxed run; the cosine schedule ends when the time does
        n_heldout=1000, seed=0, save_every=50, eval_every=0, threads=0,
    )


def model_config(args) -> dict:
    """The open_clip model config (the same dict open_clip's own model_configs/*.json hold)."""
    if args.vision_tower == "resnet":   # open_clip builds a ModifiedResNet when layers is a list
        vision = {"image_size": args.image_size, "layers": list(args.resnet_layers), "width": args.resnet_width,
                  "head_width": 64}
    elif args.vision_tower == "vit":
        vision = {"image_size": args.image_size, "layers": args.vision_layers, "width": args.vision_width,
                  "patch_size": args.patch_size, "head_width": 64}
    else:
        raise ValueError(f"--vision-tower must be 'vit' or 'resnet', not {args.vision_tower!r}")
    return {
        "embed_dim": args.embed_dim,
        "vision_cfg": vision,
        "text_cfg": {"context_length": args.context_length, "vocab_size": 49408, "width": args.text_width,
                     "heads": max(args.text_width // 64, 1), "layers": args.text_layers},
    }


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


def build_model(args) -> tuple[torch.nn.Module, dict]:
    cfg = model_config(args)
    torch.manual_seed(args.seed)
    model = open_clip.CLIP(**cfg, init_logit_scale=float(np.log(1 / args.temperature)), output_dict=True)
    open_clip.factory.set_model_preprocess_cfg(model, {"size": args.image_size, "mean": open_clip.OPENAI_DATASET_MEAN,
                                                        "std": open_clip.OPENAI_DATASET_STD})
    if args.init_from:
        load_state_dict_checked(model, read_safetensors(Path(args.init_from) / OPEN_CLIP_WEIGHTS),
                                Path(args.init_from) / OPEN_CLIP_WEIGHTS)
    return model, cfg


def make_optimizer(model: torch.nn.Module, args) -> torch.optim.Optimizer:
    """AdamW; no weight decay on gains, biases, embeddings and the temperature (CLIP's recipe)."""
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embedding" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embedding" not in n)]
    return torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=args.lr, betas=(0.9, 0.98), eps=1e-6)


def heldout_figures(model: torch.nn.Module, ds_all: data_mod.ImageSet, held_idx: np.ndarray, device) -> dict:
    """eval-clip's figures of the model as it is now (the training curve's y axis)."""
    encoder = ClipEncoder(model, open_clip.tokenize, "training", device)
    figures = evaluate_clip(encoder, ds_all, held_idx)
    model.train()
    return {**figures["caption_to_image"], **{f"zero_shot_{k}": v for k, v in figures["zero_shot"].items()}}


def train(args) -> Path:
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    fast_float32(device)
    out = Path(args.out)
    model, cfg = build_model(args)
    model.to(device)
    tokenizer = open_clip.tokenize  # the CLIP BPE vocabulary that ships with open_clip
    optimizer = make_optimizer(model, args)
    loss_fn = ClipLoss()

    ds_all = data_mod.load_training_data(args.data, args.image_size)
    train_idx, held_idx = data_mod.heldout_split(ds_all.splits, args.n_heldout, args.seed)
    ds = ds_all.subset(train_idx)
    pixels = torch.from_numpy(ds.images).to(device)                # uint8, the whole set on the device
    print(f"CLIP training on {len(ds)} images ({len(held_idx)} held out), {len(ds.class_names)} species, "
          f"{sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters, {args.vision_tower} image tower, "
          f"{args.precision} on {device}")

    state = load_run(out, model, optimizer)
    log = LossLog(out / "loss.csv")
    log.truncate_after(state.step)
    curve = MetricLog(out / "eval.csv")
    curve.truncate_after(state.step)
    timer = Timer(state.seconds)
    stop = StopRequest()
    model.train()
    bar = tqdm(range(state.step, args.max_steps), initial=state.step, total=args.max_steps, desc="CLIP", unit="step")
    for step in bar:
        gen = step_generator(args.seed, step)
        idx = batch_indices(len(ds), args.batch_size, args.seed, step)
        batch01 = (from_uint8(pixels[torch.as_tensor(idx, device=device)]) + 1) / 2
        crops = random_resized_crop_flip(batch01, args.image_size, args.crop_scale_min, args.flip_prob, gen)
        images = normalize_pixels(crops, model)
        texts = tokenizer(pick_captions(ds, idx, args.species_caption_prob, gen),
                          context_length=args.context_length).to(device)
        position = schedule_position(step, timer.seconds, args.max_steps, args.max_seconds)
        lr = args.lr * lr_factor(step, args.warmup_steps, args.max_steps, position=position)
        set_lr(optimizer, lr)
        with autocast(device, args.precision):
            outputs = model(images, texts)
            loss = loss_fn(outputs["image_features"].float(), outputs["text_features"].float(),
                           outputs["logit_scale"].float())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        with torch.no_grad():  # CLIP's clamp of the learned temperature at 100
            model.logit_scale.clamp_(0, np.log(100))
        done = step + 1
        last = done == args.max_steps or out_of_time(timer.seconds, args.max_seconds) or stop.requested
        log.append(done, loss.item(), lr, timer.seconds)
        bar.set_postfix(loss=f"{loss.item():.3f}", img_s=f"{args.batch_size * (done - state.step) / max(timer.seconds - state.seconds, 1e-9):.0f}")
        if args.eval_every and (done % args.eval_every == 0 or last) and not stop.requested:
            curve.append(done, done * args.batch_size, timer.seconds, heldout_figures(model, ds_all, held_idx, device))
        if done % args.save_every == 0 or last:
            save_run(out, RunState(done, timer.seconds), model, optimizer, args=vars(args))
            log.plot(out / "loss.png", "flowers CLIP: contrastive loss")
        if last:
            break
    stop.restore()
    state = load_run(out, model, optimizer)   # the last saved step: what is exported

    card = {"architecture": cfg, "steps": state.step, "batch_size": args.batch_size,
            "images_seen": state.step * args.batch_size,
            "train_seconds": round(state.seconds), "train_images": len(ds), "heldout_images": len(held_idx),
            "heldout_sources": [ds_all.sources[i] for i in held_idx[:5]] + ["..."],
            "split": f"{len(held_idx)} images drawn with seed {args.seed} from Oxford-102's official test split are "
                     "held out; all other Oxford-102 images and flowers5 train",
            "args": {k: describe_path(v) if k in ("data", "init_from") else v
                     for k, v in vars(args).items() if k not in ("out", "export", "device", "threads")}}
    model.eval()
    export_clip(model.cpu(), cfg, Path(args.export), card)
    print(f"exported CLIP to {args.export}")
    return Path(args.export)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="clipdiff train-clip", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_defaults_to_parser(parser, clip_defaults())
    return parser


def main(argv=None):
    train(build_parser().parse_args(argv))


if __name__ == "__main__":
    main()
