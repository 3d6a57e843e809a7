"""The training scripts on tiny synthetic data: they run, loss falls, and a stopped run resumes exactly."""
from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from clipdiff.commands import cli_embed
from clipdiff.diffusion import load_diffusion
from clipdiff.embed import EmbeddingTable
from clipdiff.encoders import ClipEncoder
from clipdiff.pipeline import ClipDiffusionPipeline, Job
from clipdiff.training import train_clip, train_unet
from clipdiff.training.common import LossLog, add_defaults_to_parser, batch_indices, lr_factor
from clipdiff.testing import make_image_folder

CLIP_ARGS = ["--image-size", "32", "--patch-size", "8", "--vision-width", "64", "--vision-layers", "1",
             "--text-width", "32", "--text-layers", "1", "--embed-dim", "32", "--batch-size", "8", "--n-heldout", "2"]
UNET_ARGS = ["--image-size", "16", "--block-out-channels", "16", "32", "--attention-levels", "0", "1",
             "--norm-num-groups", "8", "--attention-head-dim", "8", "--batch-size", "8", "--sample-every", "0",
             "--n-heldout", "2"]


class Interrupted(Exception):
    pass


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("training")


@pytest.fixture(scope="module")
def images(work) -> Path:
    return make_image_folder(work / "images")


@pytest.fixture(scope="module")
def clip_run(work, images) -> dict:
    """The CLIP trained for 2 steps, then its image and caption embeddings of the same images."""
    run, export, emb = work / "clip_run", work / "clip", work / "embeddings"
    train_clip.main(CLIP_ARGS + ["--data", str(images), "--max-steps", "2", "--out", str(run), "--export", str(export)])
    cli_embed.main(["--data", str(images), "--clip", str(export), "--out", str(emb), "--device", "cpu",
                    "--csv", str(work / "clip.csv")])
    return {"run": run, "export": export, "embeddings": emb, "images": images, "csv": work / "clip.csv"}


def train_unet_args(clip_run: dict, out: Path, steps: int, *extra: str) -> list[str]:
    return UNET_ARGS + ["--data", str(clip_run["images"]), "--embeddings", str(clip_run["embeddings"]),
                        "--clip", str(clip_run["export"]), "--out", str(out), "--export", str(out) + "_export",
                        "--max-steps", str(steps), *extra]


@pytest.fixture(scope="module")
def unet_4_steps(work, clip_run) -> Path:
    """An uninterrupted 4-step run, the reference for the resume tests."""
    out = work / "unet_straight"
    train_unet.main(train_unet_args(clip_run, out, 4))
    return out


@pytest.fixture(scope="module")
def unet_2_steps(work, clip_run) -> Path:
    out = work / "unet_two"
    train_unet.main(train_unet_args(clip_run, out, 2))
    return out


def loss_steps(run: Path) -> list[int]:
    return [r[0] for r in LossLog(run / "loss.csv").rows()]


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = load_file(str(a)), load_file(str(b))
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), f"{k} differs: max {(wa[k] - wb[k]).abs().max().item():.3g}"


# -- the CLIP -----------------------------------------------------------------------------------------------------

def test_train_clip_two_steps_exports_an_open_clip_model(clip_run):
    run, export = clip_run["run"], clip_run["export"]
    assert json.loads((run / "state.json").read_text())["step"] == 2
    assert loss_steps(run) == [1, 2]
    assert all(np.isfinite(r[1]) for r in LossLog(run / "loss.csv").rows())
    assert (run / "loss.png").is_file() and (run / "optimizer.pt").is_file()
    weights = load_file(str(export / "open_clip_model.safetensors"))
    assert all(v.dtype == torch.float16 for v in weights.values() if v.is_floating_point())
    card = json.loads((export / "training.json").read_text())
    assert card["steps"] == 2 and card["train_images"] == 10 and card["heldout_images"] == 2
    encoder = ClipEncoder.load(str(export), device="cpu")
    assert encoder.embed_dim == 32 and encoder.image_size == 32
    assert encoder.encode_text(["a photo of a red rose"]).shape == (1, 32)


def test_train_clip_resume_matches_an_uninterrupted_run(work, clip_run):
    resumed = work / "clip_resumed"
    shutil.copytree(clip_run["run"], resumed)
    common = CLIP_ARGS + ["--data", str(clip_run["images"]), "--max-steps", "3"]
    train_clip.main(common + ["--out", str(resumed), "--export", str(work / "clip_resumed_export")])
    straight = work / "clip_straight"
    train_clip.main(common + ["--out", str(straight), "--export", str(work / "clip_straight_export")])
    assert loss_steps(resumed) == [1, 2, 3]
    assert LossLog(resumed / "loss.csv").rows()[2][1] == LossLog(straight / "loss.csv").rows()[2][1]
    assert_same_weights(resumed / "model.safetensors", straight / "model.safetensors")


# -- embeddings ---------------------------------------------------------------------------------------------------

def test_embed_writes_the_table_and_csv(clip_run):
    table = EmbeddingTable.load(clip_run["embeddings"])
    assert table.image.shape == (12, 32) and table.image.dtype == np.float16
    assert table.image_flip.shape == (12, 32) and not np.array_equal(table.image, table.image_flip)
    assert table.index["clip_identity"] == f"local-dir:{clip_run['export']}"
    assert len(table.text_offsets) == 13
    # folder trees have no human captions: each image gets its species-name captions
    texts = [table.index["texts"][r] for r in table.caption_rows(0)]
    assert texts and all("red rose" in t for t in texts)
    rows = clip_run["csv"].read_text().splitlines()
    assert len(rows) == 12
    first = rows[0].split(",")
    assert first[0] == table.index["sources"][0] and len(first) == 33


# -- the U-Net ----------------------------------------------------------------------------------------------------

def test_train_unet_two_steps_exports_a_loadable_model(clip_run, unet_2_steps):
    out = unet_2_steps
    assert loss_steps(out) == [1, 2]
    assert (out / "ema.safetensors").is_file() and (out / "loss.png").is_file()
    model, config = load_diffusion(Path(str(out) + "_export"))
    assert config.clip_identity == f"local-dir:{clip_run['export']}"
    assert config.clip_embed_dim == 32 and config.unet.image_size == 16
    assert config.training["steps"] == 2 and config.training["train_images"] == 10
    # the exported weights are the EMA weights
    assert_same_weights(out / "ema.safetensors", Path(str(out) + "_export") / "model.safetensors")
    pipe = ClipDiffusionPipeline.load(Path(str(out) + "_export"), clip=str(clip_run["export"]), device="cpu")
    images = pipe.generate([Job("a red rose", 2.0, 0)], steps=2, sampler="ddim").images
    assert images.shape == (1, 3, 16, 16) and torch.isfinite(images).all()


def test_train_unet_resume_continues_from_the_saved_step(work, clip_run, unet_2_steps, unet_4_steps):
    out = work / "unet_resumed"
    shutil.copytree(unet_2_steps, out)   # stopped at step 2
    assert json.loads((out / "state.json").read_text())["step"] == 2
    train_unet.main(train_unet_args(clip_run, out, 4))
    assert json.loads((out / "state.json").read_text())["step"] == 4
    assert loss_steps(out) == [1, 2, 3, 4]
    # every random draw comes from (seed, step): stopping and resuming changes nothing
    assert [r[1] for r in LossLog(out / "loss.csv").rows()] == \
        [r[1] for r in LossLog(unet_4_steps / "loss.csv").rows()]
    for name in ("model.safetensors", "ema.safetensors"):
        assert_same_weights(out / name, unet_4_steps / name)


def test_train_unet_interrupted_mid_run_resumes_to_the_same_weights(work, clip_run, unet_4_steps, monkeypatch):
    out = work / "unet_interrupted"
    args = train_unet_args(clip_run, out, 4, "--save-every", "2")
    calls = []
    real_ema_update = train_unet.ema_update

    def interrupt_at_step_4(*a, **k):
        calls.append(1)
        if len(calls) == 4:   # step 3 is logged but not saved; the last save was step 2
            raise Interrupted
        real_ema_update(*a, **k)

    monkeypatch.setattr(train_unet, "ema_update", interrupt_at_step_4)
    with pytest.raises(Interrupted):
        train_unet.main(args)
    assert json.loads((out / "state.json").read_text())["step"] == 2
    assert loss_steps(out) == [1, 2, 3]

    monkeypatch.setattr(train_unet, "ema_update", real_ema_update)
    train_unet.main(args)
    assert loss_steps(out) == [1, 2, 3, 4]      # step 3 is run again, not logged twice
    for name in ("model.safetensors", "ema.safetensors"):
        assert_same_weights(out / name, unet_4_steps / name)


def test_train_unet_refuses_embeddings_of_other_images(work, clip_run):
    other = make_image_folder(work / "other_images", classes=("aster",), per_class=3)
    with pytest.raises(ValueError, match="clipdiff embed"):
        train_unet.main(UNET_ARGS + ["--data", str(other), "--embeddings", str(clip_run["embeddings"]),
                                     "--out", str(work / "never"), "--max-steps", "1"])


def test_unet_loss_falls_on_a_trivially_learnable_set(tmp_path, tiny_clip_dir):
    images = tmp_path / "images" / "solid"
    images.mkdir(parents=True)
    for i in range(8):
        Image.new("RGB", (16, 16), (200, 40, 40)).save(images / f"{i}.png")
    emb = tmp_path / "emb"
    cli_embed.main(["--data", str(images.parent), "--clip", str(tiny_clip_dir), "--out", str(emb), "--no-text",
                    "--device", "cpu"])
    out = tmp_path / "run"
    train_unet.main(UNET_ARGS + ["--data", str(images.parent), "--embeddings", str(emb), "--clip", str(tiny_clip_dir),
                                 "--cond-source", "image", "--max-steps", "12", "--warmup-steps", "1", "--lr", "3e-3",
                                 "--out", str(out), "--export", str(tmp_path / "export")])
    loss = np.array([r[1] for r in LossLog(out / "loss.csv").rows()])
    assert len(loss) == 12
    assert loss[-4:].mean() < 0.7 * loss[:4].mean(), loss.round(3)   # seen: about 0.53x


# -- shared pieces ------------------------------------------------------------------------------------------------

def test_batch_indices_are_seeded_epoch_permutations():
    n, bs = 10, 3   # 3 batches per epoch, the tail of each dropped
    epoch0 = np.concatenate([batch_indices(n, bs, seed=0, step=s) for s in range(3)])
    assert len(set(epoch0.tolist())) == 9
    assert np.array_equal(batch_indices(n, bs, 0, 4), batch_indices(n, bs, 0, 4))
    assert not np.array_equal(np.concatenate([batch_indices(n, bs, 0, s) for s in range(3, 6)]), epoch0)
    assert len(batch_indices(3, 8, 0, 0)) == 8   # a set smaller than a batch repeats images


def test_lr_factor_warms_up_then_decays_to_the_floor():
    assert lr_factor(0, 4, 100) == 0.25 and lr_factor(3, 4, 100) == 1.0
    assert lr_factor(4, 4, 100) == pytest.approx(1.0)
    assert lr_factor(100, 4, 100) == pytest.approx(0.1) and lr_factor(500, 4, 100) == pytest.approx(0.1)
    factors = [lr_factor(s, 4, 100) for s in range(4, 101)]
    assert all(a >= b for a, b in zip(factors, factors[1:]))
    # a time-boxed run (its schedule position runs ahead of its steps) still warms up, then decays by position
    assert lr_factor(0, 4, 100, position=90) == 0.25 and lr_factor(3, 4, 100, position=95) == 1.0
    assert lr_factor(5, 4, 100, position=100) == pytest.approx(0.1)


def test_every_default_is_a_flag():
    parser = argparse.ArgumentParser()
    add_defaults_to_parser(parser, {"max_steps": 10, "lr": 1e-3, "levels": [0, 0, 1], "flag": False, "data": None})
    args = parser.parse_args(["--max-steps", "3", "--levels", "1", "1", "--flag", "true"])
    assert (args.max_steps, args.lr, args.levels, args.flag, args.data) == (3, 1e-3, [1, 1], True, None)
    assert set(vars(parser.parse_args([]))) == {"max_steps", "lr", "levels", "flag", "data"}
    for defaults in (train_unet.unet_defaults(), train_clip.clip_defaults()):
        parser = argparse.ArgumentParser()
        add_defaults_to_parser(parser, defaults)
        assert vars(parser.parse_args([])).keys() == defaults.keys()


def test_loss_log_truncates_after_a_step(tmp_path):
    log = LossLog(tmp_path / "loss.csv")
    for step in range(1, 6):
        log.append(step, 1.0 / step, 1e-3, step * 0.5)
    log.truncate_after(3)
    assert [r[0] for r in log.rows()] == [1, 2, 3]
    log.append(4, 0.2, 1e-3, 2.0)
    assert [r[0] for r in log.rows()] == [1, 2, 3, 4]
    log.plot(tmp_path / "loss.png", "test")
    assert (tmp_path / "loss.png").stat().st_size > 0
