"""The recipe options of the training scripts: crops that keep colour, min-SNR weights, --init-from, a ResNet
image tower, time-boxed runs, a clean stop on SIGTERM, the quality curve while training."""
from __future__ import annotations

import json
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from clipdiff.commands import cli_embed
from clipdiff.checkpoints import CheckpointError, describe_path
from clipdiff.diffusion import load_diffusion
from clipdiff.embed import EmbeddingTable
from clipdiff.encoders import ClipEncoder
from clipdiff.training import train_clip, train_unet
from clipdiff.training.common import MetricLog, StopRequest, random_resized_crop_flip, schedule_position

from clipdiff.testing import make_image_folder

RESNET_CLIP_ARGS = ["--vision-tower", "resnet", "--image-size", "32", "--resnet-width", "8",
                    "--resnet-layers", "1", "1", "1", "1", "--text-width", "32", "--text-layers", "1",
                    "--embed-dim", "32", "--batch-size", "8", "--n-heldout", "2"]
UNET_ARGS = ["--image-size", "16", "--block-out-channels", "16", "32", "--attention-levels", "0", "1",
             "--norm-num-groups", "8", "--attention-head-dim", "8", "--batch-size", "8", "--sample-every", "0",
             "--n-heldout", "2"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict:
    """Images, a 1-step ResNet CLIP, its embeddings, and a 1-step U-Net trained on them."""
    root = tmp_path_factory.mktemp("recipes")
    images = make_image_folder(root / "images")
    clip = root / "clip"
    train_clip.main(RESNET_CLIP_ARGS + ["--data", str(images), "--max-steps", "1", "--out", str(root / "clip_run"),
                                        "--export", str(clip), "--eval-every", "1"])
    emb = root / "emb"
    cli_embed.main(["--data", str(images), "--clip", str(clip), "--out", str(emb), "--device", "cpu"])
    unet = root / "unet"
    train_unet.main(unet_args(images, emb, clip, root / "unet_run", unet, 1))
    return {"root": root, "images": images, "clip": clip, "emb": emb, "unet": unet}


def unet_args(images, emb, clip, out, export, steps, *extra) -> list[str]:
    return UNET_ARGS + ["--data", str(images), "--embeddings", str(emb), "--clip", str(clip), "--out", str(out),
                        "--export", str(export), "--max-steps", str(steps), *extra]


# -- augmentation ---------------------------------------------------------------------------------------------

def test_full_scale_crop_without_flip_is_the_identity_and_flips_mirror():
    x = torch.rand(3, 3, 12, 12)
    gen = torch.Generator().manual_seed(0)
    assert torch.allclose(random_resized_crop_flip(x, 12, 1.0, 0.0, gen), x, atol=1e-5)
    assert torch.allclose(random_resized_crop_flip(x, 12, 1.0, 1.0, gen), x.flip(-1), atol=1e-5)


def test_crops_zoom_in_and_keep_colour():
    x = torch.zeros(64, 3, 16, 16)
    x[:, 0] = 0.8                       # a red field with a green square in the middle
    x[:, 1, 6:10, 6:10] = 0.9
    out = random_resized_crop_flip(x, 16, 0.5, 0.5, torch.Generator().manual_seed(1))
    assert out.shape == x.shape
    assert torch.allclose(out[:, 0], torch.full_like(out[:, 0], 0.8), atol=1e-5)   # colour untouched
    green = (out[:, 1] > 0.45).float().mean(dim=(1, 2))
    assert green.max() > (x[:, 1] > 0.45).float().mean() * 1.3   # a zoomed crop shows the square larger


# -- the U-Net loss -------------------------------------------------------------------------------------------

def test_min_snr_weights_down_only_the_low_noise_steps():
    pred, noise = torch.ones(3, 3, 2, 2), torch.zeros(3, 3, 2, 2)   # per-sample MSE 1
    snr = torch.tensor([100.0, 5.0, 0.5])
    t = torch.tensor([0, 1, 2])
    assert train_unet.noise_loss(pred, noise, t, snr, "mse", 5.0).item() == pytest.approx(1.0)
    # weights min(snr, 5) / snr: 0.05, 1, 1
    assert train_unet.noise_loss(pred, noise, t, snr, "min-snr", 5.0).item() == pytest.approx((0.05 + 1 + 1) / 3)
    with pytest.raises(ValueError, match="loss_weighting"):
        train_unet.noise_loss(pred, noise, t, snr, "huber", 5.0)


def test_time_boxed_schedules_end_when_the_time_does():
    assert schedule_position(10, 999.0, 1000, 0.0) == 10             # not time-boxed: the step
    assert schedule_position(10, 50.0, 1000, 100.0) == 500           # half the time: half the schedule
    assert schedule_position(900, 50.0, 1000, 100.0) == 900          # steps ahead of the clock
    assert schedule_position(10, 500.0, 1000, 100.0) == 1000


# -- the CLIP recipes -----------------------------------------------------------------------------------------

def test_resnet_clip_exports_a_loadable_open_clip_model_and_its_curve(setup):
    encoder = ClipEncoder.load(str(setup["clip"]), device="cpu")
    assert type(encoder.model.visual).__name__ == "ModifiedResNet"
    assert encoder.encode_image(torch.zeros(2, 3, 32, 32)).shape == (2, 32)
    card = json.loads((setup["clip"] / "training.json").read_text())
    assert card["architecture"]["vision_cfg"]["layers"] == [1, 1, 1, 1] and card["images_seen"] == 8
    assert card["args"]["data"] == describe_path(setup["images"])          # no absolute machine path
    (row,) = MetricLog(setup["root"] / "clip_run" / "eval.csv").rows()
    assert row["step"] == 1 and row["images_seen"] == 8 and 0 <= row["R@5"] <= 1 and 0 <= row["zero_shot_top1"] <= 1


def test_clip_init_from_starts_from_the_given_weights(setup, tmp_path):
    export = tmp_path / "again"
    train_clip.main(RESNET_CLIP_ARGS + ["--data", str(setup["images"]), "--max-steps", "1", "--lr", "0",
                                        "--weight-decay", "0", "--init-from", str(setup["clip"]),
                                        "--out", str(tmp_path / "run"), "--export", str(export)])
    a = load_file(str(setup["clip"] / "open_clip_model.safetensors"))
    b = load_file(str(export / "open_clip_model.safetensors"))
    # lr 0: one step later, still the weights it started from (batch-norm statistics move with every batch)
    weights = [k for k in a if "running_" not in k and "num_batches" not in k]
    assert len(weights) > 50 and all(torch.equal(a[k], b[k]) for k in weights)


# -- the U-Net recipes ----------------------------------------------------------------------------------------

def test_unet_init_from_starts_from_the_given_weights_and_refuses_another_architecture(setup, tmp_path):
    export = tmp_path / "again"
    train_unet.main(unet_args(setup["images"], setup["emb"], setup["clip"], tmp_path / "run", export, 1,
                              "--lr", "0", "--init-from", str(setup["unet"])))
    a, b = load_file(str(setup["unet"] / "model.safetensors")), load_file(str(export / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    _, config = load_diffusion(export)
    assert config.training["init_from"] == describe_path(setup["unet"])
    with pytest.raises(CheckpointError, match="architecture"):
        train_unet.main(unet_args(setup["images"], setup["emb"], setup["clip"], tmp_path / "run2", tmp_path / "x", 1,
                                  "--init-from", str(setup["unet"]), "--block-out-channels", "8", "16"))


def test_caption_conditions_are_drawn_from_the_images_own_captions(setup):
    table = EmbeddingTable.load(setup["emb"])
    args = train_unet.build_parser().parse_args(["--cond-source", "text", "--flip-prob", "0"])
    rows = np.arange(len(table.image))
    train_set = train_unet.TrainingSet(torch.zeros(len(rows), 3, 16, 16), table, rows, args)
    _, cond = train_set.batch(rows, torch.Generator().manual_seed(0))
    for r in rows:
        own = torch.from_numpy(table.text[table.caption_rows(int(r))].astype(np.float32))
        own = own / own.norm(dim=1, keepdim=True) * np.sqrt(table.dim)
        assert torch.isclose(own, cond[r], atol=1e-3).all(1).any(), f"image {r} got another image's caption"


def test_a_sigterm_ends_the_run_saved_and_exported(setup, tmp_path, monkeypatch):
    class StopAtOnce(StopRequest):      # as if SIGTERM came during the first step
        def __init__(self):
            super().__init__()
            self.requested = True

    monkeypatch.setattr(train_unet, "StopRequest", StopAtOnce)
    export = tmp_path / "export"
    train_unet.main(unet_args(setup["images"], setup["emb"], setup["clip"], tmp_path / "run", export, 50))
    assert json.loads((tmp_path / "run" / "state.json").read_text())["step"] == 1
    _, config = load_diffusion(export)
    assert config.training["steps"] == 1 and config.training["images_seen"] == 8


def test_stop_request_catches_sigterm_and_restores_the_handler():
    before = signal.getsignal(signal.SIGTERM)
    stop = StopRequest()
    signal.raise_signal(signal.SIGTERM)   # to this thread: os.kill lets the kernel pick any of the process's threads
    assert stop.requested
    stop.restore()
    assert signal.getsignal(signal.SIGTERM) == before


def test_the_yardstick_curve_is_written_while_training(setup, tmp_path):
    from clipdiff.__main__ import main as clipdiff_main

    yardstick = tmp_path / "yardstick"
    assert clipdiff_main(["train-yardstick", "--data", str(setup["images"]), "--out", str(yardstick),
                          "--image-size", "16", "--widths", "8", "--epochs", "1", "--batch-size", "4",
                          "--n-heldout", "4", "--device", "cpu"]) == 0
    out = tmp_path / "run"
    train_unet.main(unet_args(setup["images"], setup["emb"], setup["clip"], out, tmp_path / "export", 2,
                              "--eval-every", "1", "--yardstick", str(yardstick), "--eval-per-species", "2"))
    rows = MetricLog(out / "yardstick.csv").rows()
    assert [r["step"] for r in rows] == [1, 2] and [r["images_seen"] for r in rows] == [8, 16]
    assert all(np.isfinite(r["fd"]) and 0 <= r["accuracy"] <= 1 for r in rows)


def test_describe_path_keeps_machine_folders_out():
    assert describe_path("/root/clipdiff-runs/embeddings") == "clipdiff-runs/embeddings"
    assert describe_path(Path(__file__).resolve().parents[1] / "runs" / "x") == "runs/x"
    assert describe_path(None) is None
