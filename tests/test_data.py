"""Training data loaders: folder trees, captions JSONL, unreadable files, the held-out split."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from clipdiff import data as data_mod
from clipdiff.data import concat, heldout_split, load_any, load_captions_jsonl, load_folder_tree
from clipdiff.testing import make_image_folder


def write_captions(root, rows):
    (root / "jpg").mkdir(parents=True, exist_ok=True)
    lines = []
    for k, (cls, split, colour) in enumerate(rows):
        name = f"jpg/image_{k:05d}.jpg"
        Image.new("RGB", (40, 30), colour).save(root / name)
        lines.append(json.dumps({"image": name, "class_name": cls, "split": split,
                                 "captions": [f"a {cls} number {k}", f"another {cls}"]}))
    (root / "captions.jsonl").write_text("\n".join(lines) + "\n")
    return root / "captions.jsonl"


def test_folder_tree(image_folder):
    ds = load_folder_tree(image_folder, size=16)
    assert len(ds) == 12
    assert ds.images.shape == (12, 16, 16, 3) and ds.images.dtype == np.uint8
    assert ds.class_names == ["red rose", "yellow daisy"]
    assert ds.labels.tolist() == [0] * 6 + [1] * 6
    assert ds.images[0, ..., 0].mean() > 150 and ds.images[0, ..., 2].mean() < 100   # red
    assert ds.captions == [[]] * 12 and ds.splits == ["train"] * 12 and ds.skipped == 0
    assert ds.sources[0] == "red rose/0.png"
    assert ds.captions_for(0) == data_mod.species_captions("red rose")


def test_folder_tree_underscores_and_flat_folder(tmp_path):
    make_image_folder(tmp_path / "tree", classes=("black_eyed_susan",), per_class=2)
    assert load_folder_tree(tmp_path / "tree", 8).class_names == ["black eyed susan"]
    flat = tmp_path / "flat"
    flat.mkdir()
    for i in range(3):
        Image.new("RGB", (10, 10), (i * 50, 0, 0)).save(flat / f"{i}.png")
    (flat / "notes.txt").write_text("not an image")
    ds = load_folder_tree(flat, 8)
    assert len(ds) == 3 and ds.class_names == ["flat"]


def test_captions_jsonl(tmp_path):
    path = write_captions(tmp_path / "ox", [("rose", "train", (255, 0, 0)), ("daisy", "test", (255, 255, 255)),
                                            ("rose", "valid", (200, 0, 0))])
    ds = load_captions_jsonl(path, size=8)
    assert ds.images.shape == (3, 8, 8, 3)
    assert ds.class_names == ["daisy", "rose"]
    assert ds.labels.tolist() == [1, 0, 1]
    assert ds.splits == ["train", "test", "valid"]
    assert ds.captions[1] == ["a daisy number 1", "another daisy"]
    assert ds.captions_for(1)[:2] == ds.captions[1] and len(ds.captions_for(1)) > 2
    assert (ds.images[1] > 240).all()   # white, centre-cropped from 40x30
    assert load_any(tmp_path / "ox").sources == ds.sources   # a folder holding captions.jsonl
    assert len(load_any(path)) == 3                          # the file itself


def test_corrupt_image_is_skipped_with_a_warning_and_counted(image_folder, tmp_path):
    (image_folder / "red rose" / "broken.png").write_bytes(b"\x89PNG not really")
    (image_folder / "yellow daisy" / "empty.jpg").write_bytes(b"")
    with pytest.warns(UserWarning, match="unreadable") as record:
        ds = load_folder_tree(image_folder, 8)
    assert len(ds) == 12 and ds.skipped == 2
    assert any("broken.png" in str(w.message) for w in record)
    assert "red rose/broken.png" not in ds.sources

    path = write_captions(tmp_path / "ox", [("rose", "train", (255, 0, 0)), ("daisy", "test", (0, 0, 255))])
    (tmp_path / "ox" / "jpg" / "image_00000.jpg").write_bytes(b"garbage")
    with pytest.warns(UserWarning) as record:
        ds = load_captions_jsonl(path, 8)
    assert any("skipped 1 unreadable" in str(w.message) for w in record)
    assert len(ds) == 1 and ds.skipped == 1 and ds.class_names == ["daisy", "rose"]


def test_no_readable_images_is_an_error(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.png").write_bytes(b"nope")
    with pytest.warns(UserWarning), pytest.raises(ValueError, match="no readable images"):
        load_folder_tree(tmp_path, 8)


def test_subset_and_concat(image_folder, tmp_path):
    ds = load_folder_tree(image_folder, 8)
    sub = ds.subset([11, 0])
    assert sub.labels.tolist() == [1, 0] and sub.sources == [ds.sources[11], ds.sources[0]]
    assert np.array_equal(sub.images[0], ds.images[11])
    other = load_folder_tree(make_image_folder(tmp_path / "b", classes=("aster", "yellow daisy"), per_class=1), 8)
    both = concat([ds, other])
    assert both.class_names == ["aster", "red rose", "yellow daisy"]
    assert len(both) == 14
    assert [both.class_names[l] for l in both.labels[-2:]] == ["aster", "yellow daisy"]


def test_heldout_split_is_deterministic_and_disjoint():
    splits = ["train"] * 30 + ["test"] * 50 + ["valid"] * 20
    train, held = heldout_split(splits, n_heldout=10, seed=3)
    again_train, again_held = heldout_split(splits, n_heldout=10, seed=3)
    assert np.array_equal(train, again_train) and np.array_equal(held, again_held)
    assert len(held) == 10 and set(held) <= set(range(30, 80))           # drawn from the test split
    assert not set(train) & set(held)
    assert sorted(set(train) | set(held)) == list(range(100))
    assert not np.array_equal(heldout_split(splits, 10, seed=4)[1], held)
    # at most half of the test split is held out
    assert len(heldout_split(splits, n_heldout=1000)[1]) == 25


def test_heldout_split_without_a_test_split():
    train, held = heldout_split(["train"] * 12, n_heldout=1000)
    assert len(held) == 6 and len(train) == 6 and not set(train) & set(held)
