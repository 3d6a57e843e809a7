"""Tiny random models and data, made in a second: tests and smoke runs never need the shipped weights.

The tiny CLIP shares the shipped one's tokenizer and 77-token context; the tiny U-Net makes 16 x 16 images. The
atlas is in the shipped format, from the tiny CLIP's real embeddings of coloured squares, with PCA standing in for
all three views (fitting UMAP would cost ~20 s of numba compiling).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

TINY_CLIP_CONFIG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 64, "patch_size": 8, "head_width": 32},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 1, "layers": 1},
}
SQUARE_COLOURS = {"rose": (200, 30, 40), "daisy": (240, 230, 230), "sunflower": (240, 180, 30)}


def make_tiny_clip(folder: Path, seed: int = 0) -> Path:
    import open_clip

    from ..training.train_clip import export_clip

    torch.manual_seed(seed)
    model = open_clip.CLIP(**TINY_CLIP_CONFIG, output_dict=True)
    open_clip.factory.set_model_preprocess_cfg(
        model, {"size": 32, "mean": open_clip.OPENAI_DATASET_MEAN, "std": open_clip.OPENAI_DATASET_STD})
    export_clip(model, TINY_CLIP_CONFIG, folder, {"note": "tiny random model for tests"})
    return folder


def tiny_unet_config(cond_dim: int = 32, **overrides):
    from ..unet import UNetConfig

    kwargs = dict(image_size=16, cond_dim=cond_dim, block_out_channels=(16, 32), layers_per_block=1,
                  attention_levels=(False, True), attention_head_dim=8, norm_num_groups=8)
    kwargs.update(overrides)
    return UNetConfig(**kwargs)


def tiny_training_flags() -> tuple[str, str]:
    """train-clip and train-unet flags that train models the size of the tiny ones above (a ViT CLIP, 16 x 16 U-Net) on
    make_image_folder's 12 images (2 held out), saving every step: what train-default's --clip-flags and --unet-flags
    take in tests."""
    v, t, u = TINY_CLIP_CONFIG["vision_cfg"], TINY_CLIP_CONFIG["text_cfg"], tiny_unet_config()
    clip = (f"--image-size {v['image_size']} --vision-tower vit --patch-size {v['patch_size']} "
            f"--vision-width {v['width']} --vision-layers {v['layers']} --text-width {t['width']} "
            f"--text-layers {t['layers']} --embed-dim {TINY_CLIP_CONFIG['embed_dim']} --n-heldout 2 --save-every 1")
    unet = (f"--image-size {u.image_size} --block-out-channels {' '.join(map(str, u.block_out_channels))} "
            f"--attention-levels {' '.join(str(int(a)) for a in u.attention_levels)} "
            f"--norm-num-groups {u.norm_num_groups} --attention-head-dim {u.attention_head_dim} --sample-every 0 "
            "--n-heldout 2 --save-every 1")
    return clip, unet


def make_tiny_unet(folder: Path, clip_identity: str, cond_dim: int = 32, seed: int = 0, **overrides) -> Path:
    from ..diffusion import DiffusionConfig, save_diffusion
    from ..unet import ConditionalUNet

    torch.manual_seed(seed)
    config = DiffusionConfig(unet=tiny_unet_config(cond_dim, **overrides), clip_identity=clip_identity,
                             clip_embed_dim=cond_dim)
    model = ConditionalUNet(config.unet)
    with torch.no_grad():  # a random null embedding, so conditional and unconditional differ
        model.null_embedding.normal_()
    save_diffusion(model, config, folder)
    return folder


def tiny_student(teacher, config, teacher_id: str = "unet-tiny", seed: int = 0, trained: bool = True):
    """A fast-mode student of a tiny teacher (model, DiffusionConfig) -> (FastStudent, FastConfig); trained: its w
    projection made non-zero, as training makes it (an untrained one ignores w)."""
    from ..fast import FastConfig, FastStudent

    fast = FastConfig(diffusion=config, teacher=teacher_id)
    student = FastStudent.from_teacher(teacher, fast)
    if trained:
        torch.manual_seed(seed)
        with torch.no_grad():
            student.unet.time_embedding.cond_proj.weight.normal_(0, 0.5)
    return student.eval(), fast


def make_tiny_student(folder: Path, unet_dir: Path, seed: int = 0) -> Path:
    """A saved student of the tiny teacher in unet_dir, named after it (so a pipeline of that teacher takes it)."""
    from ..diffusion import load_diffusion
    from ..fast import save_fast
    from ..pipeline import model_id_of

    student, fast = tiny_student(*load_diffusion(unet_dir), teacher_id=model_id_of(Path(unet_dir)), seed=seed)
    save_fast(student, fast, folder)
    return folder


def write_tiny_atlas(folder: Path, encoder, n_images: int = 24) -> Path:
    """An atlas of n_images coloured squares (rose red, daisy white, sunflower yellow, in turn) and five texts."""
    from safetensors.numpy import save_file

    from ..atlas import ARRAYS, META, METHODS
    from ..similarity import unit

    rng = np.random.default_rng(0)
    labels = np.arange(n_images) % len(SQUARE_COLOURS)
    colours = np.array(list(SQUARE_COLOURS.values()))
    pixels = np.clip(colours[labels][:, None, None, :] + rng.normal(0, 20, (n_images, 32, 32, 3)), 0, 255)
    images = [Image.fromarray(p.astype(np.uint8)) for p in pixels]
    class_names = list(SQUARE_COLOURS)
    texts = [f"a photo of a {c}, a type of flower" for c in class_names] + ["a red flower", "white petals"]
    image_emb = encoder.encode_image(images).numpy()
    text_emb = encoder.encode_text(texts).numpy()
    raw = np.concatenate([unit(image_emb).numpy(), unit(text_emb).numpy()])
    mean = raw.mean(0)
    _, _, vt = np.linalg.svd(raw - mean, full_matrices=False)
    coords = ((raw - mean) @ vt[:2].T).astype(np.float32)
    arrays = {"image_emb": image_emb.astype(np.float16), "text_emb": text_emb.astype(np.float16),
              "labels": labels.astype(np.int32), "text_labels": np.array([0, 1, 2, -1, -1], dtype=np.int32),
              "image_mean": unit(image_emb).numpy().mean(0), "text_mean": unit(text_emb).numpy().mean(0),
              "pca_mean": mean.astype(np.float32), "pca_components": vt[:2].astype(np.float32),
              **{f"coords_{m}": coords for m in METHODS}}
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: np.ascontiguousarray(v) for k, v in arrays.items()}, str(folder / ARRAYS))
    (folder / META).write_text(json.dumps({"clip_identity": encoder.identity, "class_names": class_names,
                                           "sources": [f"img{i}.jpg" for i in range(n_images)],
                                           "texts": texts, "methods": list(METHODS)}))
    return folder


def make_image_folder(root: Path, classes=("red rose", "yellow daisy"), per_class: int = 6, size: int = 24) -> Path:
    """A folder tree of class folders with simple coloured images: red for the first class, yellow next."""
    colours = [(220, 30, 40), (240, 220, 40), (40, 60, 220), (30, 200, 60)]
    rng = np.random.default_rng(0)
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            arr = np.clip(rng.normal(0, 12, (size, size, 3)) + colours[c % len(colours)], 0, 255).astype(np.uint8)
            Image.fromarray(arr).save(root / name / f"{i}.png")
    return root
