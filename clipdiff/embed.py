"""Precomputed CLIP embeddings of a training set (the reference's clip.csv), as float16 .npy files.

A folder holds:
  image.npy        (N, D) image embeddings
  image_flip.npy   (N, D) embeddings of the horizontally flipped images (training flips images)
  text.npy         (M, D) caption embeddings (human captions, then species-name captions)
  text_offsets.npy (N + 1,) image i's captions are text rows text_index[offsets[i]:offsets[i + 1]]
  text_index.npy   caption rows, per image
  index.json       clip identity, dimension, per-image source, label and split, class names
"""
from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from .checkpoints import atomic_save_json, read_json
from .data import ImageSet
from .sampling import from_uint8
from .encoders import ENCODE_BATCH, ClipEncoder


@dataclass
class EmbeddingTable:
    image: np.ndarray
    image_flip: np.ndarray
    text: np.ndarray
    text_offsets: np.ndarray
    text_index: np.ndarray
    index: dict

    @property
    def dim(self) -> int:
        return int(self.image.shape[1])

    def caption_rows(self, i: int) -> np.ndarray:
        return self.text_index[self.text_offsets[i]:self.text_offsets[i + 1]]

    @classmethod
    def load(cls, folder: str | Path) -> "EmbeddingTable":
        folder = Path(folder)
        arrays = {name: np.load(folder / f"{name}.npy", allow_pickle=False)
                  for name in ("image", "image_flip", "text", "text_offsets", "text_index")}
        return cls(**arrays, index=read_json(folder / "index.json"))


def _images_tensor(images: np.ndarray, flip: bool) -> torch.Tensor:
    x = from_uint8(images)
    return x.flip(-1) if flip else x


def precompute(encoder: ClipEncoder, ds: ImageSet, folder: str | Path, with_text: bool = True) -> EmbeddingTable:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for name, flip in (("image", False), ("image_flip", True)):
        chunks = []
        for s in tqdm(range(0, len(ds), ENCODE_BATCH), desc=f"embed {name}", unit="batch"):
            chunks.append(encoder.encode_image(_images_tensor(ds.images[s:s + ENCODE_BATCH], flip)))
        out[name] = torch.cat(chunks).numpy().astype(np.float16)

    texts: list[str] = []
    row_of: dict[str, int] = {}
    offsets, rows = [0], []
    for i in range(len(ds)):
        for caption in (ds.captions_for(i) if with_text else []):
            if caption not in row_of:
                row_of[caption] = len(texts)
                texts.append(caption)
            rows.append(row_of[caption])
        offsets.append(len(rows))
    text_chunks = [encoder.encode_text(texts[s:s + ENCODE_BATCH])
                   for s in tqdm(range(0, len(texts), ENCODE_BATCH), desc="embed captions", unit="batch")]
    out["text"] = (torch.cat(text_chunks).numpy() if text_chunks else np.zeros((0, out["image"].shape[1]))
                   ).astype(np.float16)
    out["text_offsets"] = np.asarray(offsets, dtype=np.int64)
    out["text_index"] = np.asarray(rows, dtype=np.int32)
    for name, arr in out.items():
        np.save(folder / f"{name}.npy", arr)
    index = {"clip_identity": encoder.identity, "dim": int(out["image"].shape[1]), "class_names": ds.class_names,
             "labels": ds.labels.tolist(), "sources": ds.sources, "splits": ds.splits, "texts": texts}
    atomic_save_json(index, folder / "index.json")
    return EmbeddingTable(**out, index=index)


def export_csv(table: EmbeddingTable, path: str | Path) -> None:
    """The reference's clip.csv layout: file name, then the embedding's values."""
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        for source, row in zip(table.index["sources"], table.image.astype(np.float32)):
            writer.writerow([source, *(f"{v:.6g}" for v in row)])
