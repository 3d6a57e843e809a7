"""The model card (checkpoints/README.md), rendered from what the runs recorded: the models' own files (the CLIP's
training.json and eval.json, the U-Net's config.json), the stages that trained them (stages.json: which machine, how
many steps, how long), eval-gen's report, the previous models' figures and the recipe comparison. train-default
writes it; tests/test_model_card.py checks that the shipped card is what this renders from the shipped files.
"""
from __future__ import annotations

import json
from pathlib import Path

from ..checkpoints import CHECKPOINTS_DIR, PROJECT_ROOT
from ..claims import weights_id
from .recipe import LR_FLOOR, RECORDS_NAME, duration, load_records, machine_text
from .train_fast import model_card_section

ASSETS_DIR = PROJECT_ROOT / "assets"
PREVIOUS_DIR = PROJECT_ROOT / "benchmarks" / "previous"      # the replaced models' figures, kept for comparison
RECIPES_PATH = PROJECT_ROOT / "benchmarks" / "recipes.md"
WEIGHTS = {"unet": ("model.safetensors", "U-Net"), "clip": ("open_clip_model.safetensors", "CLIP"),
           "atlas": ("atlas.safetensors", "atlas")}


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


def models_line(checkpoints: Path) -> str:
    """Which weights this card describes, by the ids the app and the claims file name them with."""
    ids = {name: weights_id(checkpoints / name, weights) if (checkpoints / name / weights).is_file() else "(none yet)"
           for name, (weights, _) in WEIGHTS.items()}
    return (f"The app loads `{ids['unet']}` (U-Net), `{ids['clip']}` (CLIP) and `{ids['atlas']}` (atlas); what the "
            "tour and the docs say about them is measured in `claims.json` (`python -m clipdiff claims`).")


def stage_time(rec: dict) -> str:
    took, boxed = duration(rec["train_seconds"]), rec.get("time_boxed_s")
    if not boxed:
        return took
    return f"{took} (time-boxed)" if duration(boxed) == took else f"{took} (time-boxed to {duration(boxed)})"


def stages_section(records: dict, model: str, seen: str) -> str:
    """A model's stages as train-default runs them (the table) and as they shipped (machine, time, notes)."""
    stages = [r for r in records["stages"] if r["model"] == model]
    if not stages:
        return "- (no stages recorded)"
    unet = model == "unet"
    everything = sum(r["steps"] * r["batch_size"] for r in stages)
    previous = records.get("previous", {}).get(model)
    lines = [f"- trained in {len(stages)} stage{'s' if len(stages) > 1 else ''}, {everything:,} {seen} seen in all"
             + (f" (the previous {'U-Net' if unet else 'CLIP'}: {previous:,})" if previous else "")
             + f"; each stage's lr warms up, then follows a cosine down to {LR_FLOOR:g} x its lr:", ""]
    head = ["stage", "starts from", *(["conditions from"] if unet else []), "steps x batch", seen, "lr", "warm-up",
            *(["EMA"] if unet else []), "trained on", "time"]
    lines += ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for r in stages:
        cells = [r["name"], r["init_from"] or "scratch", *([r["conditions"]] if unet else []),
                 f"{r['steps']:,} x {r['batch_size']}", f"{r['steps'] * r['batch_size']:,}", f"{r['lr']:g}",
                 str(r["warmup_steps"]), *([f"{r['ema_decay']:g}"] if unet else []), machine_text(r), stage_time(r)]
        lines.append("| " + " | ".join(cells) + " |")
    notes = [f"- {r['name']}: {'; '.join(r['notes'])}" for r in stages if r.get("notes")]
    return "\n".join(lines + ([""] + notes if notes else []))


def render_model_card(checkpoints: Path = CHECKPOINTS_DIR, assets: Path = ASSETS_DIR) -> str:
    """The card from the files in checkpoints (clip/, unet/, stages.json) and assets (eval_gen.json)."""
    checkpoints, assets = Path(checkpoints), Path(assets)
    clip_card = _read(checkpoints / "clip" / "training.json")
    unet_cfg = _read(checkpoints / "unet" / "config.json")
    records = load_records(checkpoints / RECORDS_NAME)
    arch = clip_card["architecture"]
    u, tr = unet_cfg["unet"], unet_cfg["training"]
    a = clip_card.get("args", {})
    return f"""# Model card: the embedded default models

Both models were trained by clipdiff's own code (`python -m clipdiff train-default` runs every stage below with
these settings as its defaults; `--dry-run` prints them with the time each would take on your machine) from
`../shared/data`: Oxford-102 flowers (64x64, 10 captions per image, Reed et al. 2016) and flowers5 (5 species in
class folders, captioned with species-name templates). No dataset image is shipped.

{models_line(checkpoints)}

## Split
{clip_card["split"]}. Training images: {clip_card["train_images"]}; held out: {clip_card["heldout_images"]}.

## flowers CLIP (`clip/`)
open_clip architecture (loadable as `local-dir:checkpoints/clip`), weights in float16 safetensors.
- image tower: {clip_tower(arch["vision_cfg"])}
- text tower: width {arch["text_cfg"]["width"]}, {arch["text_cfg"]["layers"]} layers, context {arch["text_cfg"]["context_length"]} tokens (the CLIP BPE vocabulary)
- embedding: {arch["embed_dim"]}-d; open_clip's contrastive loss, initial temperature {a.get("temperature", 0.07)}
- AdamW; random square crops ({a.get("crop_scale_min")}..1 of the side) and flips, no colour jitter
{stages_section(records, "clip", "image-caption pairs")}

Held-out evaluation (`python -m clipdiff eval-clip`):

{clip_metrics(_read(checkpoints / "clip" / "eval.json"), _read(PREVIOUS_DIR / "eval_clip.json"))}

## diffusion U-Net (`unet/`)
diffusers `UNet2DConditionModel`, {u["image_size"]}x{u["image_size"]}x3, widths {u["block_out_channels"]}, {u["layers_per_block"]} layer(s) per block,
attention at levels {u["attention_levels"]}; conditioned on the CLIP embedding (projected into the timestep
embedding and as a one-token cross-attention context).
- noise schedule: T = {unet_cfg["schedule"]["num_train_timesteps"]}, {unet_cfg["schedule"]["beta_schedule"]} betas {unet_cfg["schedule"]["beta_start"]}..{unet_cfg["schedule"]["beta_end"]}
- conditions: {unet_cfg["cond_source"]} embeddings, normalisation `{unet_cfg["embedding_norm"]}`; context dropout {u["cond_drop_prob"]} ({u["null_mode"]} null)
- loss: noise-prediction MSE, {tr.get("loss_weighting", "mse")} weighting (gamma {tr.get("snr_gamma", "-")}); flips {tr.get("flip_prob", 0.5)}
- AdamW; the EMA weights of the last stage ship
{stages_section(records, "unet", "images")}

Generated images measured by an independent yardstick (a species classifier of our own, `clipdiff.training.yardstick`;
`python -m clipdiff eval-gen --species 8`), at the app's default sampler:

{species_table(_read(assets / "eval_gen.json"), _read(PREVIOUS_DIR / "eval_gen.json"))}

![quality against images seen](../assets/curves.png)

## How the recipes were chosen
{RECIPES_PATH.read_text() if RECIPES_PATH.is_file() else "(no comparison recorded)"}
## Atlas (`atlas/`)
Image embeddings of every dataset image (float16), species names, one species prompt per species and a
sample of captions, with 2-D UMAP (raw and centred) and PCA coordinates.
{model_card_section(checkpoints / "fast")}"""


def write_model_card(checkpoints: Path = CHECKPOINTS_DIR, assets: Path = ASSETS_DIR) -> Path:
    path = Path(checkpoints) / "README.md"
    path.write_text(render_model_card(checkpoints, assets))
    return path
