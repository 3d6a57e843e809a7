"""The independent yardstick: a species classifier of our own, and the distances measured in its features."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from clipdiff import data as data_mod
from clipdiff.__main__ import main as clipdiff_main
from clipdiff.training.yardstick import SpeciesJudge, Yardstick, augment, blur

# Species told apart by texture as much as by colour, so that a blur (colour kept, shape lost) shows.
PATTERNS = {
    "striped rose": lambda y, x: ((x // 2) % 2) * 200 + 30,
    "checked daisy": lambda y, x: (((x // 2) + (y // 2)) % 2) * 200 + 30,
    "ringed tulip": lambda y, x: (((np.hypot(y - 8, x - 8)).astype(int) // 2) % 2) * 200 + 30,
}


def textured_data(root, per_species: int = 16, size: int = 16):
    rng = np.random.default_rng(0)
    rows = []
    (root / "oxford102" / "images").mkdir(parents=True)
    yy, xx = np.mgrid[:size, :size]
    for s, (name, pattern) in enumerate(PATTERNS.items()):
        for i in range(per_species):
            base = pattern(yy, xx).astype(float)
            arr = np.stack([base, np.roll(base, s, 1), base[::-1]], -1) + rng.normal(0, 10, (size, size, 3))
            file = f"images/{name.replace(' ', '_')}_{i}.png"
            Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).save(root / "oxford102" / file)
            rows.append({"image": file, "class_name": name, "split": "test" if i % 2 else "train",
                         "captions": [f"a {name}"]})
    (root / "oxford102" / "captions.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return root


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("yardstick")
    data = textured_data(root / "data")
    out = root / "classifier"
    rc = clipdiff_main(["train-yardstick", "--data", str(data), "--out", str(out), "--image-size", "16",
                        "--widths", "8", "16", "--epochs", "25", "--batch-size", "8", "--n-heldout", "12",
                        "--device", "cpu"])
    assert rc == 0
    return data, out


def test_the_classifier_trains_saves_and_loads(trained):
    _, out = trained
    yardstick = Yardstick.load(out, device="cpu")
    assert yardstick.class_names == sorted(PATTERNS)
    assert yardstick.info["heldout_accuracy"] > 0.6       # chance is 1/3
    features, logits = yardstick.embed(torch.zeros(5, 3, 32, 32))     # resized to its own 16 px
    assert features.shape == (5, 16) and logits.shape == (5, 3)


def test_real_held_out_images_are_closer_than_blurred_ones(trained):
    data, out = trained
    ds = data_mod.load_training_data(data, 64)
    _, held = data_mod.heldout_split(ds.splits, 12, 0)
    judge = SpeciesJudge(Yardstick.load(out, device="cpu"), ds, held, image_size=16)
    assert len(judge.species) == 3 and all("a photo of a" in p for p in judge.prompts())
    ref = judge.references(n_per_species=4)
    assert 6 <= ref["real"]["n_images"] <= 12 and ref["real"]["n_species"] == 3   # up to 4 per species
    assert ref["real"]["fd"] < ref["blurred"]["fd"]
    assert ref["real"]["kid"] < ref["blurred"]["kid"]
    assert ref["real"]["accuracy"] > ref["blurred"]["accuracy"]


def test_blur_keeps_flat_colour_and_smooths_edges():
    flat = torch.full((1, 3, 16, 16), 0.3)
    assert torch.allclose(blur(flat), flat, atol=1e-6)
    edge = torch.zeros(1, 3, 16, 16)
    edge[..., 8:] = 1
    smooth = blur(edge)
    assert 0 < smooth[0, 0, 0, 7] < 1 and smooth.shape == edge.shape


def test_augment_translates_and_flips_within_the_image():
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).view(2, 3, 8, 8)
    out = augment(x, torch.Generator().manual_seed(1), pad=2)
    assert out.shape == x.shape
    assert set(out.unique().tolist()) <= set(x.unique().tolist())   # reflect padding: only the image's own values
