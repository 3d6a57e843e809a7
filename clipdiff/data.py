"""Image sets for training: a captions JSONL or a folder tree of class folders -> uint8 arrays in memory.

Both shipped data sets fit in memory at 64x64 (~150 MB), so training reads arrays, not files.
"""
from __future__ import annotations

import json
import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from .images import center_square

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp"}

# Species-name captions, so that prompts naming a species work as well as descriptive captions.
SPECIES_TEMPLATES = (
    "a photo of a {}, a type of flower.",
    "a {} flower",
    "a photo of a {}.",
    "a close-up photo of a {}.",
)


def species_captions(name: str) -> list[str]:
    return [t.format(name) for t in SPECIES_TEMPLATES]


def default_data_root() -> Path:
    """`../shared/data` beside the checkout, where the workshop data lives."""
    return Path(__file__).resolve().parents[2] / "shared" / "data"


@dataclass
class ImageSet:
    images: np.ndarray                      # (N, S, S, 3) uint8
    labels: np.ndarray                      # (N,) int64 index into class_names
    class_names: list[str]
    captions: list[list[str]]               # per image; may be empty (folder trees have none)
    sources: list[str]                      # file path relative to its root, for reporting only
    splits: list[str] = field(default_factory=list)
    skipped: int = 0                        # unreadable files left out

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, idx) -> "ImageSet":
        idx = np.asarray(idx, dtype=np.int64)
        return ImageSet(self.images[idx], self.labels[idx], self.class_names,
                        [self.captions[i] for i in idx], [self.sources[i] for i in idx],
                        [self.splits[i] for i in idx] if self.splits else [], self.skipped)

    def captions_for(self, i: int) -> list[str]:
        """Human captions of image i plus its species-name captions."""
        return self.captions[i] + species_captions(self.class_names[self.labels[i]])


def load_image(path: Path, size: int) -> np.ndarray | None:
    """Centre-crop and resize one file to (size, size, 3) uint8; None (with a warning) if unreadable."""
    try:
        with Image.open(path) as im:
            return np.asarray(center_square(im, size), dtype=np.uint8)
    except Exception as e:  # PIL raises many types for bad files; all mean "skip it"
        warnings.warn(f"skipping unreadable image {path}: {e}")
        return None


def load_captions_jsonl(path: str | Path, size: int = 64) -> ImageSet:
    """Oxford-102 style: one JSON object per line with image, class_name, split and captions."""
    path = Path(path)
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    class_names = sorted({r["class_name"] for r in rows})
    index = {n: i for i, n in enumerate(class_names)}
    images, labels, captions, sources, splits, skipped = [], [], [], [], [], 0
    for r in rows:
        arr = load_image(path.parent / r["image"], size)
        if arr is None:
            skipped += 1
            continue
        images.append(arr)
        labels.append(index[r["class_name"]])
        captions.append(list(r.get("captions", [])))
        sources.append(r["image"])
        splits.append(r.get("split", "train"))
    return _finish(images, labels, class_names, captions, sources, splits, skipped, path)


def load_folder_tree(root: str | Path, size: int = 64) -> ImageSet:
    """One sub-folder per class, any image files inside (the reference's training layout)."""
    root = Path(root)
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir())
    if not class_dirs:  # a flat folder: one unnamed class
        class_dirs = [root]
    class_names = [d.name.replace("_", " ") for d in class_dirs]
    images, labels, captions, sources, skipped = [], [], [], [], 0
    for label, d in enumerate(class_dirs):
        for f in sorted(d.rglob("*")):
            if f.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            arr = load_image(f, size)
            if arr is None:
                skipped += 1
                continue
            images.append(arr)
            labels.append(label)
            captions.append([])
            sources.append(str(f.relative_to(root)))
    return _finish(images, labels, class_names, captions, sources, ["train"] * len(images), skipped, root)


def _finish(images, labels, class_names, captions, sources, splits, skipped, where) -> ImageSet:
    if skipped:
        warnings.warn(f"{where}: skipped {skipped} unreadable image(s)")
    if not images:
        raise ValueError(f"no readable images found in {where}")
    return ImageSet(np.stack(images), np.asarray(labels, dtype=np.int64), class_names,
                    captions, sources, splits, skipped)


def load_any(path: str | Path, size: int = 64) -> ImageSet:
    """A captions .jsonl file, or a folder (containing captions.jsonl, or a tree of class folders)."""
    path = Path(path)
    if path.is_file():
        return load_captions_jsonl(path, size)
    if (path / "captions.jsonl").is_file():
        return load_captions_jsonl(path / "captions.jsonl", size)
    if (path / "images").is_dir() and not (path / "captions.jsonl").exists():
        return load_folder_tree(path / "images", size)
    return load_folder_tree(path, size)


def concat(sets: list[ImageSet]) -> ImageSet:
    """Merge sets, unifying species by name."""
    names = sorted({n for s in sets for n in s.class_names})
    index = {n: i for i, n in enumerate(names)}
    labels = np.concatenate([[index[s.class_names[l]] for l in s.labels] for s in sets]).astype(np.int64)
    return ImageSet(np.concatenate([s.images for s in sets]), labels, names,
                    [c for s in sets for c in s.captions], [p for s in sets for p in s.sources],
                    [p for s in sets for p in (s.splits or ["train"] * len(s))], sum(s.skipped for s in sets))


def heldout_split(splits: list[str], n_heldout: int = 1000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(train_idx, heldout_idx): n_heldout images drawn from the official 'test' split, the rest train.

    Oxford-102's official training split has only 10 images per species, too few to learn a CLIP from,
    so a seeded sample of the official test split is held out instead and everything else trains.
    """
    test = np.array([i for i, s in enumerate(splits) if s == "test"], dtype=np.int64)
    if len(test) == 0:
        test = np.arange(len(splits))
    rng = np.random.default_rng(seed)
    held = np.sort(rng.choice(test, size=min(n_heldout, len(test) // 2 or 1), replace=False))
    train = np.setdiff1d(np.arange(len(splits)), held)
    return train, held


def load_training_data(path: str | Path | None = None, size: int = 64) -> ImageSet:
    """The shared data folder (Oxford-102, captioned, plus flowers5) by default, or any set load_any reads.

    Oxford-102 comes first, so heldout_split picks the same images whatever else is added.
    """
    root = Path(path) if path else default_data_root()
    if not (root / "oxford102").is_dir():
        return load_any(root, size)
    sets = [load_any(root / "oxford102", size)]
    if (root / "flowers5").exists():
        f5 = load_any(root / "flowers5", size)
        f5.splits = ["flowers5"] * len(f5)
        sets.append(f5)
    return concat(sets)
