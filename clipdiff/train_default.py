"""Rebuild the shipped models end to end: flowers CLIP -> embeddings -> atlas -> diffusion U-Net -> card.

    python -m clipdiff train-default [--data ../shared/data] [--runs runs]

Every stage resumes: a stopped run picks up where it was (the training scripts resume from their run
folders; finished stages are skipped). The shipped settings are each script's defaults.
"""
from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from . import data as data_mod
from . import train_clip, train_unet
from .checkpoints import (CHECKPOINTS_DIR, DEFAULT_ATLAS_DIR, DEFAULT_CLIP_DIR, DEFAULT_UNET_DIR, PROJECT_ROOT,
                          atomic_save_json)

ASSETS_DIR = PROJECT_ROOT / "assets"


def main(argv=None):
    parser = argparse.ArgumentParser(prog="clipdiff train-default", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=None, help="the shared data folder (default ../shared/data)")
    parser.add_argument("--runs", default="runs", help="where resumable training state is kept")
    parser.add_argument("--clip-steps", type=int, default=train_clip.clip_defaults()["max_steps"])
    parser.add_argument("--unet-steps", type=int, default=train_unet.unet_defaults()["max_steps"])
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--device", default="auto", help="where the CLIP trains and embeds (the U-Net: Accelerate's)")
    args = parser.parse_args(argv)
    runs = Path(args.runs)

    print("== 1/5 flowers CLIP")
    clip_args = train_clip.build_parser().parse_args([])
    clip_args.__dict__.update(data=args.data, threads=args.threads, device=args.device, out=str(runs / "clip"),
                              export=str(DEFAULT_CLIP_DIR), max_steps=args.clip_steps)
    train_clip.train(clip_args)

    print("== 2/5 CLIP evaluation on the held-out images")
    from .cli_eval import clip_report
    from .encoders import ClipEncoder
    encoder = ClipEncoder.load("default", device=args.device)
    atomic_save_json(clip_report(encoder, args.data), DEFAULT_CLIP_DIR / "eval.json")

    print("== 3/5 embeddings of the training images")
    from .embed import EmbeddingTable, precompute
    embeddings = runs / "embeddings"
    if not (embeddings / "index.json").is_file() or _older(embeddings / "index.json", DEFAULT_CLIP_DIR / "open_clip_model.safetensors"):
        precompute(encoder, data_mod.load_training_data(args.data, 64), embeddings)

    print("== 4/5 embedding atlas")
    from .atlas import build_atlas
    if not (DEFAULT_ATLAS_DIR / "atlas.safetensors").is_file() or _older(DEFAULT_ATLAS_DIR / "atlas.safetensors", embeddings / "index.json"):
        build_atlas(EmbeddingTable.load(embeddings), DEFAULT_ATLAS_DIR)

    print("== 5/5 diffusion U-Net")
    unet_args = train_unet.build_parser().parse_args([])
    unet_args.__dict__.update(data=args.data, threads=args.threads, embeddings=str(embeddings),
                              out=str(runs / "unet"), export=str(DEFAULT_UNET_DIR), max_steps=args.unet_steps)
    train_unet.train(unet_args)
    publish_assets(runs)
    write_model_card()
    print(f"done: models in {CHECKPOINTS_DIR}, pictures in {ASSETS_DIR}")


def _older(path: Path, than: Path) -> bool:
    return than.is_file() and path.stat().st_mtime < than.stat().st_mtime


def publish_assets(runs: Path) -> None:
    """The shipped model's own pictures: the loss curves and its last reference grid."""
    ASSETS_DIR.mkdir(exist_ok=True)
    for src, dst in ((runs / "unet" / "loss.png", "loss_unet.png"), (runs / "clip" / "loss.png", "loss_clip.png"),
                     (runs / "unet" / "loss.csv", "loss_unet.csv"), (runs / "clip" / "loss.csv", "loss_clip.csv")):
        if src.is_file():
            shutil.copyfile(src, ASSETS_DIR / dst)
    grids = sorted((runs / "unet" / "samples").glob("step_*.png"))
    if grids:
        shutil.copyfile(grids[-1], ASSETS_DIR / "reference_grid.png")


def write_model_card() -> Path:
    """checkpoints/README.md from what the runs recorded: data, settings, steps, wall time, metrics."""
    clip_card = json.loads((DEFAULT_CLIP_DIR / "training.json").read_text())
    clip_eval = DEFAULT_CLIP_DIR / "eval.json"
    clip_eval = json.loads(clip_eval.read_text()) if clip_eval.is_file() else {}
    unet_cfg = json.loads((DEFAULT_UNET_DIR / "config.json").read_text())
    arch = clip_card["architecture"]
    u = unet_cfg["unet"]
    tr = unet_cfg["training"]
    rows = [(f"caption->image {k}", v) for k, v in clip_eval.get("caption_to_image", {}).items()] + \
           [(f"zero-shot species {k}", v) for k, v in clip_eval.get("zero_shot", {}).items()]
    chance = clip_eval.get("counts", {})
    metrics = "\n".join(f"| {k} | {v:.3f} |" for k, v in rows) or "| (not evaluated yet) | |"
    if chance:
        metrics += (f"\n\n{chance['queries']} caption queries against {chance['gallery']} held-out images; "
                    f"{chance['candidate_species']} candidate species (chance top-1 = "
                    f"{1 / chance['candidate_species']:.3f}, R@1 = {1 / chance['gallery']:.3f}).")
    text = f"""# Model card: the embedded default models

Both models were trained by clipdiff's own code (`python -m clipdiff train-default`) on the CPU, from
`../shared/data`: Oxford-102 flowers (64x64, 10 captions per image, Reed et al. 2016) and flowers5
(5 species in class folders, captioned with species-name templates). No dataset image is shipped.

## Split
{clip_card["split"]}. Training images: {clip_card["train_images"]}; held out: {clip_card["heldout_images"]}.

## flowers CLIP (`clip/`)
open_clip architecture (loadable as `local-dir:checkpoints/clip`), weights in float16 safetensors.
- image tower: ViT, {arch["vision_cfg"]["image_size"]} px, patch {arch["vision_cfg"]["patch_size"]}, width {arch["vision_cfg"]["width"]}, {arch["vision_cfg"]["layers"]} layers
- text tower: width {arch["text_cfg"]["width"]}, {arch["text_cfg"]["layers"]} layers, context {arch["text_cfg"]["context_length"]} tokens (the CLIP BPE vocabulary)
- embedding: {arch["embed_dim"]}-d; open_clip's contrastive loss; batch {clip_card["batch_size"]}; {clip_card["steps"]} steps; {clip_card["train_seconds"] / 60:.0f} min on 2 CPU cores

Held-out evaluation (`python -m clipdiff eval-clip`):

| metric | value |
| --- | --- |
{metrics}

## diffusion U-Net (`unet/`)
diffusers `UNet2DConditionModel`, {u["image_size"]}x{u["image_size"]}x3, widths {u["block_out_channels"]}, {u["layers_per_block"]} layer(s) per block,
attention at levels {u["attention_levels"]}; conditioned on the CLIP embedding (projected into the timestep
embedding and as a one-token cross-attention context).
- noise schedule: T = {unet_cfg["schedule"]["num_train_timesteps"]}, {unet_cfg["schedule"]["beta_schedule"]} betas {unet_cfg["schedule"]["beta_start"]}..{unet_cfg["schedule"]["beta_end"]}
- conditions: {unet_cfg["cond_source"]} embeddings, normalisation `{unet_cfg["embedding_norm"]}`; context dropout {u["cond_drop_prob"]} ({u["null_mode"]} null)
- {tr.get("steps")} steps of batch {tr.get("batch_size")}, lr {tr.get("lr")}, EMA {tr.get("ema_decay")} (the EMA weights ship); {tr.get("train_seconds", 0) / 60:.0f} min on 2 CPU cores

## Atlas (`atlas/`)
Image embeddings of every dataset image (float16), species names, one species prompt per species and a
sample of captions, with 2-D UMAP (raw and centred) and PCA coordinates.
"""
    path = CHECKPOINTS_DIR / "README.md"
    path.write_text(text)
    return path


if __name__ == "__main__":
    main()
