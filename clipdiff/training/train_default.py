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

from .. import claims
from .. import data as data_mod
from . import train_clip, train_unet
from .train_fast import model_card_section
from ..checkpoints import (CHECKPOINTS_DIR, DEFAULT_ATLAS_DIR, DEFAULT_CLIP_DIR, DEFAULT_UNET_DIR, PROJECT_ROOT,
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
    from ..evaluate import clip_report
    from ..encoders import ClipEncoder
    encoder = ClipEncoder.load("default", device=args.device)
    atomic_save_json(clip_report(encoder, args.data), DEFAULT_CLIP_DIR / "eval.json")

    print("== 3/5 embeddings of the training images")
    from ..embed import EmbeddingTable, precompute
    embeddings = runs / "embeddings"
    if not (embeddings / "index.json").is_file() or _older(embeddings / "index.json", DEFAULT_CLIP_DIR / "open_clip_model.safetensors"):
        precompute(encoder, data_mod.load_training_data(args.data, 64), embeddings)

    print("== 4/5 embedding atlas")
    from ..atlas import build_atlas
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


def _read(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def clip_tower(vision: dict) -> str:
    if isinstance(vision.get("layers"), list):
        return (f"ResNet (open_clip ModifiedResNet), {vision['image_size']} px, layers {vision['layers']}, "
                f"width {vision['width']}")
    return (f"ViT, {vision['image_size']} px, patch {vision['patch_size']}, width {vision['width']}, "
            f"{vision['layers']} layers")


def clip_metrics(now: dict, before: dict) -> str:
    rows = [(f"caption->image {k}", "caption_to_image", k) for k in now.get("caption_to_image", {})] + \
           [(f"zero-shot species {k}", "zero_shot", k) for k in now.get("zero_shot", {})]
    lines = ["| metric | this model | previous model |", "| --- | --- | --- |"]
    for label, group, key in rows:
        old = before.get(group, {}).get(key)
        lines.append(f"| {label} | {now[group][key]:.3f} | {'-' if old is None else format(old, '.3f')} |")
    counts = now.get("counts")
    if counts:
        lines.append(f"\n{counts['queries']} caption queries against {counts['gallery']} held-out images; "
                     f"{counts['candidate_species']} candidate species (chance top-1 = "
                     f"{1 / counts['candidate_species']:.3f}, R@1 = {1 / counts['gallery']:.3f}).")
    return "\n".join(lines) if rows else "(not evaluated yet)"


def species_table(now: dict, before: dict) -> str:
    """The independent yardstick's figures: the floor, blurred real images, the previous and this model."""
    species = now.get("species")
    if not species:
        return "(not measured yet: `python -m clipdiff eval-gen --species 8`)"
    ref = species["reference"]
    entries = [("real held-out images (the floor)", ref["real"]),
               (f"real images blurred (sigma {ref['blur_sigma_px']} px)", ref["blurred"])]
    for label, report in (("previous model", before), ("this model", now)):
        for run in report.get("runs", []):
            for r in run.get("species", []):
                entries.append((f"{label}, w = {r['w']:g}", r))
    lines = ["| images | FD | KID x1000 | species accuracy | top-5 |", "| --- | --- | --- | --- | --- |"]
    lines += [f"| {label} | {r['fd']:.2f} | {r['kid']:.2f} | {r['accuracy']:.3f} | {r['top5']:.3f} |"
              for label, r in entries]
    c = species["classifier"]
    lines.append(f"\n{species['species']} species prompts x {species['n_per_species']} images, {now.get('steps')} "
                 f"{now.get('sampler')} steps; the classifier (clipdiff.training.yardstick, {c['image_size']} px, "
                 f"held-out top-1 {c['heldout_accuracy']:.3f}) was trained by the project on the real training images.")
    return "\n".join(lines)


def stages(training: dict) -> str:
    """A model trained in several runs (e.g. a first stage on a lent GPU, then fine-tuned here) lists them."""
    return "".join(f"\n  - {stage}" for stage in training.get("stages", []))


def models_line() -> str:
    """Which weights this card describes, by the ids the app and the claims file name them with."""
    ids = claims.shipped_model_ids()
    return (f"The app loads `{ids['unet']}` (U-Net), `{ids['clip']}` (CLIP) and `{ids['atlas']}` (atlas); what the "
            "tour and the docs say about them is measured in `claims.json` (`python -m clipdiff claims`).")


def write_model_card() -> Path:
    """checkpoints/README.md from what the runs and evaluations recorded: data, settings, images seen, wall time,
    the held-out figures (beside the previous model's, kept in benchmarks/previous/), the recipe comparison."""
    clip_card = _read(DEFAULT_CLIP_DIR / "training.json")
    unet_cfg = _read(DEFAULT_UNET_DIR / "config.json")
    previous = PROJECT_ROOT / "benchmarks" / "previous"
    arch = clip_card["architecture"]
    u, tr = unet_cfg["unet"], unet_cfg["training"]
    a = clip_card.get("args", {})
    recipes = PROJECT_ROOT / "benchmarks" / "recipes.md"
    text = f"""# Model card: the embedded default models

Both models were trained by clipdiff's own code (`python -m clipdiff train-default` runs every stage with these
settings as its defaults) from `../shared/data`: Oxford-102 flowers (64x64, 10 captions per image,
Reed et al. 2016) and flowers5 (5 species in class folders, captioned with species-name templates). No dataset
image is shipped.

{models_line()}

## Split
{clip_card["split"]}. Training images: {clip_card["train_images"]}; held out: {clip_card["heldout_images"]}.

## flowers CLIP (`clip/`)
open_clip architecture (loadable as `local-dir:checkpoints/clip`), weights in float16 safetensors.
- image tower: {clip_tower(arch["vision_cfg"])}
- text tower: width {arch["text_cfg"]["width"]}, {arch["text_cfg"]["layers"]} layers, context {arch["text_cfg"]["context_length"]} tokens (the CLIP BPE vocabulary)
- embedding: {arch["embed_dim"]}-d; open_clip's contrastive loss, initial temperature {a.get("temperature", 0.07)}
- {clip_card["steps"]} steps of batch {clip_card["batch_size"]} ({clip_card.get("images_seen", clip_card["steps"] * clip_card["batch_size"]):,} image-caption pairs seen), AdamW lr {a.get("lr")}, cosine; random square crops ({a.get("crop_scale_min")}..1 of the side) and flips, no colour jitter; {clip_card["train_seconds"] / 60:.0f} min on {clip_card.get("hardware", "2 CPU cores")}{stages(clip_card)}

Held-out evaluation (`python -m clipdiff eval-clip`):

{clip_metrics(_read(DEFAULT_CLIP_DIR / "eval.json"), _read(previous / "eval_clip.json"))}

## diffusion U-Net (`unet/`)
diffusers `UNet2DConditionModel`, {u["image_size"]}x{u["image_size"]}x3, widths {u["block_out_channels"]}, {u["layers_per_block"]} layer(s) per block,
attention at levels {u["attention_levels"]}; conditioned on the CLIP embedding (projected into the timestep
embedding and as a one-token cross-attention context).
- noise schedule: T = {unet_cfg["schedule"]["num_train_timesteps"]}, {unet_cfg["schedule"]["beta_schedule"]} betas {unet_cfg["schedule"]["beta_start"]}..{unet_cfg["schedule"]["beta_end"]}
- conditions: {unet_cfg["cond_source"]} embeddings, normalisation `{unet_cfg["embedding_norm"]}`; context dropout {u["cond_drop_prob"]} ({u["null_mode"]} null)
- loss: noise-prediction MSE, {tr.get("loss_weighting", "mse")} weighting (gamma {tr.get("snr_gamma", "-")}); flips {tr.get("flip_prob", 0.5)}
- {tr.get("steps")} steps of batch {tr.get("batch_size")} ({tr.get("images_seen", 0):,} images seen), lr {tr.get("lr")}, EMA {tr.get("ema_decay")} (the EMA weights ship); {tr.get("train_seconds", 0) / 60:.0f} min on {tr.get("hardware", "2 CPU cores")}{stages(tr)}

Generated images measured by an independent yardstick (a species classifier of our own, `clipdiff.training.yardstick`;
`python -m clipdiff eval-gen --species 8`), at the app's default sampler:

{species_table(_read(ASSETS_DIR / "eval_gen.json"), _read(previous / "eval_gen.json"))}

![quality against images seen](../assets/curves.png)

## How the recipes were chosen
{recipes.read_text() if recipes.is_file() else "(no comparison recorded)"}
## Atlas (`atlas/`)
Image embeddings of every dataset image (float16), species names, one species prompt per species and a
sample of captions, with 2-D UMAP (raw and centred) and PCA coordinates.
{model_card_section()}"""
    path = CHECKPOINTS_DIR / "README.md"
    path.write_text(text)
    return path
