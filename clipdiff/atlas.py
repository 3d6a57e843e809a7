"""The embedding atlas: dataset image embeddings and text embeddings on one 2-D map, fitted offline.

Built once (`build_atlas`, during train-default) and shipped in checkpoints/atlas: embeddings as float16
safetensors, species and texts as JSON, and precomputed 2-D coordinates for three views:
  "umap"           UMAP of the raw unit embeddings: texts and images form separate islands (the modality gap)
  "umap-centered"  UMAP after subtracting each modality's mean: the gap closes and prompts sit among images
  "pca"            the first two principal components, for comparison with a linear view
New points (a prompt, an uploaded or generated image) are placed live, in milliseconds. PCA places them
exactly. For the UMAP views we do what umap's own transform() uses as its starting point, a similarity-
weighted mean of the coordinates of the k nearest atlas points, because keeping the fitted UMAP object
would mean shipping a pickle, which clipdiff never loads.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import load_file, save_file

from .checkpoints import DEFAULT_ATLAS_DIR, CheckpointError, atomic_save_json, read_json
from .data import species_captions
from .embed import EmbeddingTable

ARRAYS = "atlas.safetensors"
META = "atlas.json"
METHODS = ("umap", "umap-centered", "pca")
PLACE_NEIGHBOURS = 10
PLACE_TEMPERATURE = 0.02   # softmax temperature over cosines of the neighbours


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-8)


@dataclass
class Atlas:
    image_emb: np.ndarray        # (N, D) float32, raw
    labels: np.ndarray           # (N,)
    class_names: list[str]
    sources: list[str]
    text_emb: np.ndarray         # (M, D) float32, raw
    texts: list[str]
    text_labels: np.ndarray      # (M,) species of a species prompt, -1 for a caption
    arrays: dict                 # coordinates, means and PCA basis
    clip_identity: str

    METHODS = METHODS

    @classmethod
    def load(cls, folder: str | Path | None = None) -> "Atlas":
        folder = Path(folder or DEFAULT_ATLAS_DIR)
        if not (folder / ARRAYS).is_file():
            raise CheckpointError(f"no embedding atlas at {folder}: build it with `python -m clipdiff train-default`")
        try:
            arrays = load_file(str(folder / ARRAYS))
        except Exception as e:  # safetensors raises several types for damaged files
            raise CheckpointError(f"{folder / ARRAYS} is not a readable safetensors file: {e}") from None
        meta = read_json(folder / META)
        return cls(arrays.pop("image_emb").astype(np.float32), arrays.pop("labels").astype(np.int64),
                   meta["class_names"], meta["sources"], arrays.pop("text_emb").astype(np.float32), meta["texts"],
                   arrays.pop("text_labels").astype(np.int64), arrays, meta["clip_identity"])

    def coords(self, method: str = "umap") -> dict[str, np.ndarray]:
        self._check(method)
        xy = self.arrays[f"coords_{method}"]
        n = len(self.image_emb)
        return {"images": xy[:n], "texts": xy[n:]}

    def _space(self, emb: np.ndarray, modality: str, method: str) -> np.ndarray:
        """Embeddings as the given view saw them: unit vectors, centred per modality for umap-centered."""
        e = _unit(emb)
        if method == "umap-centered":
            e = _unit(e - self.arrays["image_mean" if modality == "image" else "text_mean"])
        return e

    def place(self, embeddings, method: str = "umap", modality: str = "text") -> np.ndarray:
        """(K, D) raw embeddings -> (K, 2) map coordinates in the given view."""
        self._check(method)
        if modality not in ("text", "image"):
            raise ValueError("modality must be 'text' or 'image'")
        emb = np.asarray(torch.as_tensor(embeddings).float().reshape(-1, self.image_emb.shape[1]))
        if method == "pca":
            return (_unit(emb) - self.arrays["pca_mean"]) @ self.arrays["pca_components"].T
        bank = self._bank(method)
        sims = self._space(emb, modality, method) @ bank.T
        k = min(PLACE_NEIGHBOURS, bank.shape[0])
        idx = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        near = np.take_along_axis(sims, idx, axis=1)
        weights = np.exp((near - near.max(1, keepdims=True)) / PLACE_TEMPERATURE)
        weights /= weights.sum(1, keepdims=True)
        xy = self.arrays[f"coords_{method}"]
        return np.einsum("kn,knd->kd", weights, xy[idx])

    def _bank(self, method: str) -> np.ndarray:
        cache = self.__dict__.setdefault("_banks", {})
        if method not in cache:
            cache[method] = np.concatenate([self._space(self.image_emb, "image", method),
                                            self._space(self.text_emb, "text", method)])
        return cache[method]

    def _check(self, method: str) -> None:
        if method not in METHODS:
            raise ValueError(f"unknown map method {method!r}; choose one of {METHODS}")


def build_atlas(table: EmbeddingTable, folder: str | Path | None = None, n_captions: int = 1500,
                seed: int = 0, n_neighbors: int = 15) -> Path:
    """Fit the views on all dataset images, one species prompt per species and a sample of captions."""
    import umap  # imported here: numba compiles on first import, which the app never needs

    folder = Path(folder or DEFAULT_ATLAS_DIR)
    idx = table.index
    class_names = idx["class_names"]
    labels = np.asarray(idx["labels"], dtype=np.int64)
    image_emb = table.image.astype(np.float32)

    species_prompts = [species_captions(c)[0] for c in class_names]
    all_species_captions = {t for c in class_names for t in species_captions(c)}
    captions = [t for t in idx["texts"] if t not in all_species_captions]
    rng = np.random.default_rng(seed)
    picked = sorted(rng.choice(len(captions), size=min(n_captions, len(captions)), replace=False)) if captions else []
    texts = species_prompts + [captions[i] for i in picked]
    text_labels = np.array(list(range(len(class_names))) + [-1] * len(picked), dtype=np.int64)
    text_pos = {t: i for i, t in enumerate(idx["texts"])}
    text_emb = table.text[[text_pos[t] for t in texts]].astype(np.float32)

    images_u, texts_u = _unit(image_emb), _unit(text_emb)
    arrays = {"image_mean": images_u.mean(0), "text_mean": texts_u.mean(0)}
    centred = np.concatenate([_unit(images_u - arrays["image_mean"]), _unit(texts_u - arrays["text_mean"])])
    raw = np.concatenate([images_u, texts_u])
    for method, points in (("umap", raw), ("umap-centered", centred)):
        reducer = umap.UMAP(n_neighbors=n_neighbors, min_dist=0.1, metric="cosine", random_state=seed)
        arrays[f"coords_{method}"] = reducer.fit_transform(points).astype(np.float32)
    pca_mean = raw.mean(0)
    _, _, vt = np.linalg.svd(raw - pca_mean, full_matrices=False)
    arrays["pca_mean"], arrays["pca_components"] = pca_mean, vt[:2].astype(np.float32)
    arrays["coords_pca"] = ((raw - pca_mean) @ vt[:2].T).astype(np.float32)

    folder.mkdir(parents=True, exist_ok=True)
    save_file({"image_emb": image_emb.astype(np.float16), "text_emb": text_emb.astype(np.float16),
               "labels": labels.astype(np.int32), "text_labels": text_labels.astype(np.int32),
               **{k: np.ascontiguousarray(v, dtype=np.float32) for k, v in arrays.items()}},
              str(folder / ARRAYS))
    atomic_save_json({"clip_identity": idx["clip_identity"], "class_names": class_names,
                      "sources": idx["sources"], "texts": texts, "methods": list(METHODS)}, folder / META)
    return folder

