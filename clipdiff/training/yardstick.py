"""A yardstick for generated flowers that does not depend on the project's CLIP: a species classifier of its own.

FD_CLIP and CMMD measure in the space of the CLIP being improved, so they cannot judge that CLIP. This module
trains a small CNN to name Oxford-102 (and flowers5) species from 32x32 pixels, then measures generated images
in its feature space (the 256-d layer before the classifier), prompt by species prompt
("a photo of a {species}, a type of flower."):

  fd        Frechet distance between the features of all generated images (n per species prompt, so
            species-balanced) and a species-balanced sample of real training images. FID's formula on this
            classifier's features: not comparable with published FIDs.
  kid       kernel inception distance (cubic polynomial kernel, the unbiased MMD^2 estimator of Binkowski et al.
            2018) between each species prompt's images and that species' real images, averaged over species,
            x1000. Unbiased, so it holds up with a handful of images per species where a per-species FD cannot.
  accuracy  does a prompt for species X give an image the classifier calls X? top-1 and top-5.

Two reference points make the numbers readable: "real" (held-out real images in place of the generated ones:
the floor a perfect generator would reach) and "blurred" (the same images under a Gaussian blur: colour
blobs of the right species, no shapes).

    python -m clipdiff train-yardstick            # once; weights cached in runs/yardstick, never shipped
    python -m clipdiff eval-gen --species 4       # opt-in: the figures for a U-Net, beside FD_CLIP and CMMD

The classifier is a tool of measurement: it is trained on the images not held out, with flips and random
crops, and its held-out accuracy is in its config.json.
"""
from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from .. import data as data_mod
from ..checkpoints import (CheckpointError, atomic_save_json, atomic_save_safetensors, describe_path,
                          load_state_dict_checked, read_json, read_safetensors)
from ..devices import resolve_device
from ..evaluate import KID_SCALE, frechet_distance, kid
from ..images import resized_unit
from ..pipeline import images_per_prompt
from ..sampling import DEFAULT_SAMPLER, DEFAULT_STEPS
from .common import add_defaults_to_parser, fast_float32, batch_indices, lr_factor, set_lr, step_generator

DEFAULT_DIR = Path("runs/yardstick")
YARDSTICK_KEYS = ("fd", "kid", "accuracy", "top5")
REAL_PER_SPECIES = 20          # balanced real reference for the pooled FD
BLUR_SIGMA = 1.5               # pixels at 32x32: petals and centres gone, colours kept
SPECIES_PROMPT = "a photo of a {}, a type of flower."


class SpeciesNet(nn.Module):
    """A small VGG-style CNN for 32x32 images: conv-BN-ReLU stages, global average pool, linear head."""

    def __init__(self, num_classes: int, widths=(32, 64, 128, 256)):
        super().__init__()
        layers, c_in = [], 3
        for i, c in enumerate(widths):
            stride = 1 if i == 0 else 2
            layers += [nn.Conv2d(c_in, c, 3, stride, 1, bias=False), nn.BatchNorm2d(c), nn.ReLU(inplace=True),
                       nn.Conv2d(c, c, 3, 1, 1, bias=False), nn.BatchNorm2d(c), nn.ReLU(inplace=True)]
            c_in = c
        self.body = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Dropout(0.2), nn.Linear(c_in, num_classes))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, 32, 32) in [-1, 1] -> (N, widths[-1]) pooled features."""
        return self.body(x).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


@dataclass
class Yardstick:
    net: SpeciesNet
    class_names: list[str]
    image_size: int
    info: dict

    @classmethod
    def load(cls, folder: str | Path | None = None, device: str = "auto") -> "Yardstick":
        folder = Path(folder or DEFAULT_DIR)
        config = read_json(folder / "config.json")
        if config.get("format") != "clipdiff-yardstick-v1":
            raise CheckpointError(f"{folder / 'config.json'} is not a clipdiff yardstick")
        net = SpeciesNet(len(config["class_names"]), tuple(config["widths"]))
        load_state_dict_checked(net, read_safetensors(folder / "model.safetensors"), folder / "model.safetensors")
        return cls(net.eval().to(resolve_device(device)), config["class_names"], config["image_size"], config)

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    @torch.inference_mode()
    def embed(self, images: torch.Tensor, batch: int = 512) -> tuple[torch.Tensor, torch.Tensor]:
        """(features (N, F), logits (N, C)) of (N, 3, H, W) images in [-1, 1], resized to the classifier's size."""
        feats, logits = [], []
        for s in range(0, len(images), batch):
            x = images[s:s + batch].float().to(self.device)
            if x.shape[-1] != self.image_size:
                x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear", antialias=True)
            f = self.net.features(x.clamp(-1, 1))
            feats.append(f.cpu())
            logits.append(self.net.head(f).cpu())
        return torch.cat(feats).double(), torch.cat(logits)


# -- the distances -----------------------------------------------------------------------------------------
def blur(images: torch.Tensor, sigma: float = BLUR_SIGMA) -> torch.Tensor:
    """Gaussian blur of (N, 3, H, W) images, reflect-padded."""
    radius = max(int(3 * sigma), 1)
    taps = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-taps ** 2 / (2 * sigma ** 2))
    kernel = (kernel / kernel.sum()).to(images)
    x = F.pad(images, (radius, radius, radius, radius), mode="reflect")
    x = F.conv2d(x, kernel.view(1, 1, 1, -1).expand(3, 1, 1, -1), groups=3)
    return F.conv2d(x, kernel.view(1, 1, -1, 1).expand(3, 1, -1, 1), groups=3)


def figures(features: torch.Tensor, logits: torch.Tensor, labels: np.ndarray, real_by_species: dict,
            real_pool: torch.Tensor) -> dict:
    """fd, kid (x1000), accuracy and top5 of images whose intended species are labels (classifier indices)."""
    labels = np.asarray(labels)
    per_species = [kid(features[torch.as_tensor(labels == c)], real_by_species[c]) for c in np.unique(labels)]
    top5 = logits.topk(min(5, logits.shape[1]), dim=1).indices.numpy()
    return {"fd": frechet_distance(features, real_pool),
            "kid": KID_SCALE * float(np.nanmean(per_species)),
            "accuracy": float((top5[:, 0] == labels).mean()),
            "top5": float((top5 == labels[:, None]).any(1).mean()),
            "n_images": int(len(labels)), "n_species": int(len(np.unique(labels)))}


class SpeciesJudge:
    """The real side, computed once: real features per species, a balanced real pool, the reference points."""

    def __init__(self, yardstick: Yardstick, ds: data_mod.ImageSet, heldout_rows, image_size: int = 32,
                 seed: int = 0):
        self.yardstick = yardstick
        self.image_size = image_size
        index = {n: i for i, n in enumerate(yardstick.class_names)}
        labels = np.array([index.get(ds.class_names[l], -1) for l in ds.labels])
        held = np.zeros(len(ds), bool)
        held[np.asarray(heldout_rows, dtype=np.int64)] = True
        pixels = resized_unit(ds.images, image_size)
        features, _ = yardstick.embed(pixels)
        rng = np.random.default_rng(seed)
        captioned = np.array([s != "flowers5" for s in (ds.splits or ["train"] * len(ds))])
        # Species prompts: the captioned set's species that have held-out images (Oxford-102: all 102).
        self.species = sorted({int(labels[i]) for i in np.flatnonzero(held & captioned) if labels[i] >= 0})
        self.real_by_species, pool = {}, []
        for c in self.species:
            rows = np.flatnonzero(~held & (labels == c))
            self.real_by_species[c] = features[torch.as_tensor(rows)]
            pool.append(rng.choice(rows, size=min(REAL_PER_SPECIES, len(rows)), replace=False))
        self.real_pool = features[torch.as_tensor(np.concatenate(pool))]
        self.held_rows = {c: np.flatnonzero(held & (labels == c)) for c in self.species}
        self.pixels = pixels
        self.seed = seed

    def prompts(self) -> list[str]:
        return [SPECIES_PROMPT.format(self.yardstick.class_names[c]) for c in self.species]

    def measure(self, images: torch.Tensor, labels) -> dict:
        features, logits = self.yardstick.embed(images)
        return figures(features, logits, labels, self.real_by_species, self.real_pool)

    def references(self, n_per_species: int) -> dict:
        """The floor (held-out real images) and blurred real images, n per species as a generation would be."""
        rng = np.random.default_rng(self.seed + 1)
        rows, labels = [], []
        for c in self.species:
            take = rng.choice(self.held_rows[c], size=min(n_per_species, len(self.held_rows[c])), replace=False)
            rows.append(take)
            labels += [c] * len(take)
        real = self.pixels[torch.as_tensor(np.concatenate(rows))]
        return {"real": self.measure(real, labels), "blurred": self.measure(blur(real), labels),
                "blur_sigma_px": BLUR_SIGMA}

    def judge(self, pipeline, n_per_species: int = 4, w: float = 2.0, steps: int = DEFAULT_STEPS,
              sampler: str = DEFAULT_SAMPLER, seed: int = 0, batch: int = 256) -> dict:
        """Generate n images per species prompt (image k from seed + k) and measure them."""
        jobs = images_per_prompt(self.prompts(), float(w), seed, n_per_species)
        images = torch.cat([pipeline.generate(jobs[s:s + batch], steps=steps, sampler=sampler).images.cpu()
                            for s in range(0, len(jobs), batch)])
        labels = np.repeat(self.species, n_per_species)
        return {"w": float(w), "steps": steps, "sampler": sampler, **self.measure(images, labels)}


# -- training the classifier -------------------------------------------------------------------------------
def yardstick_defaults() -> dict:
    return dict(data=None, out=str(DEFAULT_DIR), image_size=32, widths=[32, 64, 128, 256], epochs=20,
                batch_size=128, lr=2e-3, weight_decay=5e-4, n_heldout=1000, seed=0, device="auto", threads=0)


def train_yardstick(args) -> Yardstick:
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    fast_float32(device)
    ds = data_mod.load_training_data(args.data, 64)
    train_rows, held_rows = data_mod.heldout_split(ds.splits, args.n_heldout, args.seed)
    pixels = resized_unit(ds.images, args.image_size)
    labels = torch.from_numpy(ds.labels)
    torch.manual_seed(args.seed)
    net = SpeciesNet(len(ds.class_names), tuple(args.widths)).to(device)
    optimizer = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    per_epoch = max(len(train_rows) // args.batch_size, 1)
    total = args.epochs * per_epoch
    bar = tqdm(range(total), desc="yardstick classifier", unit="step")
    for step in bar:
        gen = step_generator(args.seed, step)
        idx = train_rows[batch_indices(len(train_rows), args.batch_size, args.seed, step)]
        x = augment(pixels[idx], gen).to(device)
        set_lr(optimizer, args.lr * lr_factor(step, per_epoch, total, floor=0.0))
        loss = F.cross_entropy(net(x), labels[idx].to(device), label_smoothing=0.1)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        bar.set_postfix(loss=f"{loss.item():.3f}")
    net.eval()
    yardstick = Yardstick(net, ds.class_names, args.image_size, {})
    _, logits = yardstick.embed(pixels[held_rows])
    accuracy = float((logits.argmax(1) == labels[held_rows]).double().mean())
    info = {"format": "clipdiff-yardstick-v1", "class_names": ds.class_names, "image_size": args.image_size,
            "widths": list(args.widths), "heldout_accuracy": round(accuracy, 4), "train_images": len(train_rows),
            "heldout_images": len(held_rows), "steps": total,
            "args": {k: describe_path(v) if k == "data" else v for k, v in vars(args).items()
                     if k not in ("out", "device", "threads")}}
    out = Path(args.out)
    atomic_save_safetensors(net.state_dict(), out / "model.safetensors")
    atomic_save_json(info, out / "config.json")
    yardstick.info = info
    print(f"species classifier: held-out top-1 {accuracy:.3f} over {len(ds.class_names)} species -> {out}")
    return yardstick


def augment(x: torch.Tensor, gen: torch.Generator, pad: int = 3) -> torch.Tensor:
    """Random translations (reflect-padded crops) and horizontal flips of a batch."""
    n, c, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad), mode="reflect")
    dy, dx = torch.randint(0, 2 * pad + 1, (2, n), generator=gen)
    rows = (dy[:, None] + torch.arange(h))[:, None, :, None]
    cols = (dx[:, None] + torch.arange(w))[:, None, None, :]
    out = padded[torch.arange(n)[:, None, None, None], torch.arange(c)[None, :, None, None], rows, cols]
    flip = torch.rand(n, generator=gen) < 0.5
    return torch.where(flip[:, None, None, None], out.flip(-1), out)


def ensure(folder: str | Path | None = None, data: str | None = None, device: str = "auto") -> Yardstick:
    """The cached classifier, trained first (a few minutes on 2 cores) if it is not there yet."""
    folder = Path(folder or DEFAULT_DIR)
    if not (folder / "config.json").is_file():
        print(f"no species classifier in {folder}: training it once (python -m clipdiff train-yardstick)")
        parser = argparse.ArgumentParser()
        add_defaults_to_parser(parser, yardstick_defaults())
        args = parser.parse_args(["--out", str(folder), "--device", device] + (["--data", data] if data else []))
        train_yardstick(args)
    return Yardstick.load(folder, device)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="clipdiff train-yardstick", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_defaults_to_parser(parser, yardstick_defaults())
    train_yardstick(parser.parse_args(argv))
    return 0


if __name__ == "__main__":
    main()
