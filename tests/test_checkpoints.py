"""Model files: round trips, contracts with the CLIP, corrupt and hostile files, atomic writes."""
from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from clipdiff import checkpoints
from clipdiff.checkpoints import (CONFIG_NAME, WEIGHTS_NAME, CheckpointError, atomic_save_json,
                                  atomic_save_safetensors, load_training_state, read_json, read_safetensors)
from clipdiff.diffusion import DiffusionConfig, condition, load_diffusion, save_diffusion
from clipdiff.pipeline import ClipDiffusionPipeline
from clipdiff.sampling import run_to_end, sample_guided
from clipdiff.unet import ConditionalUNet
from clipdiff.testing import make_tiny_unet, tiny_unet_config

MARKER_NAME = "pwned"


class Exploit:
    """A pickle that would create a marker file if anything unpickled it."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def write_exploit(path: Path, marker: Path) -> Path:
    with open(path, "wb") as f:
        pickle.dump({"weight": Exploit(marker)}, f)
    return path


def test_round_trip_gives_identical_outputs(tmp_path):
    torch.manual_seed(0)
    config = DiffusionConfig(unet=tiny_unet_config(32, null_mode="zero-mask"), clip_identity="tiny", clip_embed_dim=32,
                             embedding_norm="none", cond_source="text", training={"steps": 3})
    model = ConditionalUNet(config.unet).eval()
    with torch.no_grad():
        model.null_embedding.normal_()
    save_diffusion(model, config, tmp_path)
    loaded, loaded_config = load_diffusion(tmp_path)
    assert loaded_config == config
    assert loaded_config.unet.null_mode == "zero-mask" and loaded_config.embedding_norm == "none"
    for k, v in model.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k]), k
    x, t, c = torch.randn(2, 3, 16, 16), torch.tensor([10, 300]), torch.randn(2, 32)
    with torch.no_grad():
        assert torch.equal(model(x, t, c), loaded(x, t, c))
    a = run_to_end(sample_guided(model, c, 2.0, [1, 2], sampler="ddim", steps=2)).images
    b = run_to_end(sample_guided(loaded, c, 2.0, [1, 2], sampler="ddim", steps=2)).images
    assert torch.equal(a, b)


def test_config_is_readable_json_with_the_contract(tiny_unet_dir):
    raw = json.loads((tiny_unet_dir / CONFIG_NAME).read_text())
    assert raw["format"] == "clipdiff-diffusion-v1"
    assert raw["clip_embed_dim"] == 32 and raw["unet"]["cond_dim"] == 32
    assert raw["schedule"] == {"num_train_timesteps": 400, "beta_start": 1e-4, "beta_end": 0.02,
                               "beta_schedule": "linear"}
    assert raw["embedding_norm"] in ("l2", "none")


def test_condition_l2_gives_unit_rms():
    emb = torch.randn(4, 32) * 7
    out = condition(emb, "l2")
    assert torch.allclose(out.pow(2).mean(dim=1).sqrt(), torch.ones(4), atol=1e-5)
    assert torch.equal(condition(emb, "none"), emb)


def test_mismatched_embedding_size_names_both(tmp_path, tiny_clip_dir):
    unet = make_tiny_unet(tmp_path / "unet512", "ViT-B-32:openai", cond_dim=512)
    with pytest.raises(CheckpointError) as err:
        ClipDiffusionPipeline.load(unet, clip=str(tiny_clip_dir), device="cpu")
    msg = str(err.value)
    assert "512" in msg and "32-d" in msg
    assert "ViT-B-32:openai" in msg and str(tiny_clip_dir) in msg


def test_config_disagreeing_with_itself_is_an_error(tmp_path, tiny_unet_dir):
    raw = json.loads((tiny_unet_dir / CONFIG_NAME).read_text())
    raw["clip_embed_dim"] = 256
    (tmp_path / CONFIG_NAME).write_text(json.dumps(raw))
    (tmp_path / WEIGHTS_NAME).write_bytes((tiny_unet_dir / WEIGHTS_NAME).read_bytes())
    with pytest.raises(CheckpointError, match="cond_dim 32 != CLIP embedding size 256"):
        load_diffusion(tmp_path)


def copy_checkpoint(src: Path, dst: Path) -> Path:
    dst.mkdir(parents=True, exist_ok=True)
    for name in (CONFIG_NAME, WEIGHTS_NAME):
        (dst / name).write_bytes((src / name).read_bytes())
    return dst


def test_truncated_weights_are_a_clear_error(tmp_path, tiny_unet_dir):
    folder = copy_checkpoint(tiny_unet_dir, tmp_path / "ckpt")
    data = (folder / WEIGHTS_NAME).read_bytes()
    (folder / WEIGHTS_NAME).write_bytes(data[:len(data) // 2])
    with pytest.raises(CheckpointError, match="not a readable safetensors file") as err:
        load_diffusion(folder)
    assert WEIGHTS_NAME in str(err.value)


def test_garbage_weights_are_a_clear_error(tmp_path):
    path = tmp_path / WEIGHTS_NAME
    path.write_bytes(b"\x00" * 7)
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        read_safetensors(path)
    path.write_bytes(os.urandom(4096))
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        read_safetensors(path)


def test_missing_files_are_clear_errors(tmp_path):
    with pytest.raises(CheckpointError, match="missing config file"):
        load_diffusion(tmp_path)
    with pytest.raises(CheckpointError, match="missing weights file"):
        read_safetensors(tmp_path / WEIGHTS_NAME)


def test_pickle_renamed_safetensors_is_refused_and_never_run(tmp_path, tiny_unet_dir):
    marker = tmp_path / MARKER_NAME
    folder = copy_checkpoint(tiny_unet_dir, tmp_path / "ckpt")
    write_exploit(folder / WEIGHTS_NAME, marker)
    with pytest.raises(CheckpointError, match="pickle"):
        load_diffusion(folder)
    assert not marker.exists()
    # a torch.save zip archive with the same payload, renamed, is refused as well
    torch.save({"weight": Exploit(marker)}, folder / WEIGHTS_NAME)
    with pytest.raises(CheckpointError):
        load_diffusion(folder)
    assert not marker.exists()


def test_the_exploit_is_real(tmp_path):
    """The guard above means something only if unpickling this file would create the marker."""
    marker = tmp_path / MARKER_NAME
    with open(write_exploit(tmp_path / "x.pkl", marker), "rb") as f:
        pickle.load(f)
    assert marker.exists()


def test_training_state_is_read_without_running_code(tmp_path):
    marker = tmp_path / MARKER_NAME
    torch.save({"state": Exploit(marker)}, tmp_path / "optimizer.pt")
    with pytest.raises(Exception):
        load_training_state(tmp_path / "optimizer.pt")
    assert not marker.exists()


def test_corrupt_config_is_a_clear_error(tmp_path, tiny_unet_dir):
    folder = copy_checkpoint(tiny_unet_dir, tmp_path / "ckpt")
    text = (folder / CONFIG_NAME).read_text()
    (folder / CONFIG_NAME).write_text(text[: len(text) // 2])
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_diffusion(folder)
    (folder / CONFIG_NAME).write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(CheckpointError, match="not a clipdiff diffusion config"):
        load_diffusion(folder)
    raw = json.loads(text)
    raw["unet"]["attention_levelz"] = [0, 1]
    (folder / CONFIG_NAME).write_text(json.dumps(raw))
    with pytest.raises(CheckpointError, match="attention_levelz"):
        load_diffusion(folder)


def test_wrong_shape_names_the_tensor(tmp_path, tiny_unet_dir):
    folder = copy_checkpoint(tiny_unet_dir, tmp_path / "ckpt")
    state = load_file(str(folder / WEIGHTS_NAME))
    state["null_embedding"] = torch.zeros(33)
    save_file(state, str(folder / WEIGHTS_NAME))
    with pytest.raises(CheckpointError) as err:
        load_diffusion(folder)
    msg = str(err.value)
    assert "null_embedding" in msg and "(33,)" in msg and "(32,)" in msg


def test_missing_and_unexpected_tensors_are_named(tmp_path, tiny_unet_dir):
    folder = copy_checkpoint(tiny_unet_dir, tmp_path / "ckpt")
    state = load_file(str(folder / WEIGHTS_NAME))
    del state["null_embedding"]
    state["extra.weight"] = torch.zeros(2)
    save_file(state, str(folder / WEIGHTS_NAME))
    with pytest.raises(CheckpointError) as err:
        load_diffusion(folder)
    assert "missing tensor(s), e.g. null_embedding" in str(err.value)
    assert "unexpected tensor(s), e.g. extra.weight" in str(err.value)


# -- atomic writes ---------------------------------------------------------------------------------------------

def test_atomic_safetensors_write_leaves_the_old_file_when_it_fails(tmp_path, monkeypatch):
    path = tmp_path / WEIGHTS_NAME
    atomic_save_safetensors({"a": torch.ones(3)}, path)
    before = path.read_bytes()

    def half_write_then_fail(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(checkpoints, "save_file", half_write_then_fail)
    with pytest.raises(OSError, match="disk full"):
        atomic_save_safetensors({"a": torch.zeros(3)}, path)
    assert path.read_bytes() == before
    assert torch.equal(read_safetensors(path)["a"], torch.ones(3))
    assert sorted(p.name for p in tmp_path.iterdir()) == [WEIGHTS_NAME]   # no temporary file left behind


def test_atomic_json_write_leaves_the_old_file_when_it_fails(tmp_path):
    path = tmp_path / CONFIG_NAME
    atomic_save_json({"step": 1}, path)
    with pytest.raises(TypeError):
        atomic_save_json({"step": 2, "bad": object()}, path)   # not JSON-serialisable: fails mid-write
    assert read_json(path) == {"step": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == [CONFIG_NAME]


def test_atomic_writes_are_readable_by_others(tmp_path):
    atomic_save_json({"a": 1}, tmp_path / "x.json")
    assert (tmp_path / "x.json").stat().st_mode & 0o777 == 0o644


def test_config_that_is_not_an_object_is_a_clear_error(tmp_path, tiny_unet_dir):
    folder = copy_checkpoint(tiny_unet_dir, tmp_path / "ckpt")
    for text in ("[1, 2]", "null", "\"config\""):
        (folder / CONFIG_NAME).write_text(text)
        with pytest.raises(CheckpointError, match="JSON object"):
            load_diffusion(folder)
