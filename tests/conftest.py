"""Tiny random models and data, made fresh for each test session: tests never need the shipped weights."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch
from PIL import Image

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(min(2, os.cpu_count() or 1))

TINY_CLIP_CONFIG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 64, "patch_size": 8, "head_width": 32},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 1, "layers": 1},
}


def make_tiny_clip(folder: Path, seed: int = 0) -> Path:
    from clipdiff.train_clip import export_clip

    torch.manual_seed(seed)
    model = open_clip.CLIP(**TINY_CLIP_CONFIG, output_dict=True)
    open_clip.factory.set_model_preprocess_cfg(
        model, {"size": 32, "mean": open_clip.OPENAI_DATASET_MEAN, "std": open_clip.OPENAI_DATASET_STD})
    export_clip(model, TINY_CLIP_CONFIG, folder, {"note": "tiny random model for tests"})
    return folder


def tiny_unet_config(cond_dim: int = 32, **overrides):
    from clipdiff.unet import UNetConfig

    kwargs = dict(image_size=16, cond_dim=cond_dim, block_out_channels=(16, 32), layers_per_block=1,
                  attention_levels=(False, True), attention_head_dim=8, norm_num_groups=8)
    kwargs.update(overrides)
    return UNetConfig(**kwargs)


def make_tiny_unet(folder: Path, clip_identity: str, cond_dim: int = 32, seed: int = 0, **overrides) -> Path:
    from clipdiff.diffusion import DiffusionConfig, save_diffusion
    from clipdiff.unet import ConditionalUNet

    torch.manual_seed(seed)
    config = DiffusionConfig(unet=tiny_unet_config(cond_dim, **overrides), clip_identity=clip_identity,
                             clip_embed_dim=cond_dim)
    model = ConditionalUNet(config.unet)
    with torch.no_grad():  # a random null embedding, so conditional and unconditional differ
        model.null_embedding.normal_()
    save_diffusion(model, config, folder)
    return folder


@pytest.fixture(scope="session")
def tiny_clip_dir(tmp_path_factory) -> Path:
    return make_tiny_clip(tmp_path_factory.mktemp("clip"))


@pytest.fixture(scope="session")
def tiny_unet_dir(tmp_path_factory, tiny_clip_dir) -> Path:
    return make_tiny_unet(tmp_path_factory.mktemp("unet"), f"local-dir:{tiny_clip_dir}")


@pytest.fixture(scope="session")
def tiny_pipeline(tiny_clip_dir, tiny_unet_dir):
    from clipdiff.pipeline import ClipDiffusionPipeline

    return ClipDiffusionPipeline.load(tiny_unet_dir, clip=str(tiny_clip_dir), device="cpu")


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


@pytest.fixture
def image_folder(tmp_path) -> Path:
    return make_image_folder(tmp_path / "images")


def free_loopback_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_app(models, concurrency: int = 1, max_queue: int = 8):
    """The real app (clipdiff.ui.serve, with its defaults) in this process on a free loopback port.
    Returns (demo, url); close with demo.close()."""
    from clipdiff.ui import build_app, serve

    demo = build_app(models, concurrency=concurrency)
    port = free_loopback_port()
    serve(demo, port=port, concurrency=concurrency, max_queue=max_queue, prevent_thread_lock=True, quiet=True)
    return demo, f"http://127.0.0.1:{port}/"
