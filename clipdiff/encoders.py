"""One interface over open_clip: load a CLIP from local files only, show tokens, encode texts and images.

Three ways to name a model, all through open_clip's own loading code:
  "default"                      the embedded flowers CLIP in checkpoints/clip (an open_clip 'local-dir:')
  "local-dir:/path" or a folder  any folder with open_clip_config.json + weights
  "ViT-B-32" + pretrained        an open_clip architecture; pretrained is a tag whose file is already in the
                                 local cache ("openai", "laion2b_s34b_b79k", ...) or a weights file path
Nothing is downloaded: a missing weight raises ClipWeightsMissing at once, saying where to put the file
(open_clip itself would retry the network for ~47 s before failing).
"""
from __future__ import annotations

import os
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import open_clip
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors import SafetensorError

from .checkpoints import DEFAULT_CLIP_DIR, CheckpointError
from .devices import resolve_device
from .images import center_square

OPEN_CLIP_CONFIG = "open_clip_config.json"
OPEN_CLIP_WEIGHTS = "open_clip_model.safetensors"
TEXT_CACHE_SIZE = 1024
ENCODE_BATCH = 256


class ClipWeightsMissing(FileNotFoundError):
    """The named CLIP's weights are not on this machine."""


def _create_model(name: str, **kwargs):
    """open_clip.create_model, with a weights file that safetensors cannot read (truncated, or a pickle
    renamed .safetensors, never unpickled) as a CheckpointError that says so."""
    try:
        return open_clip.create_model(name, **kwargs)
    except SafetensorError as e:
        raise CheckpointError(f"the CLIP weights of {name} are not a readable safetensors file ({e}); they may be "
                              "truncated, or a pickle renamed .safetensors, which clipdiff never loads") from None


@dataclass
class TokenView:
    pieces: list[str]      # readable text of each token the model sees, start and end markers included
    ids: list[int]
    count: int             # tokens the whole prompt needs, markers included
    context_length: int
    truncated: bool
    kept_text: str         # the part of the prompt the model actually reads


def normalize_pixels(x01: torch.Tensor, model) -> torch.Tensor:
    """(N, 3, H, W) in [0, 1] -> the model's input: resized to its image size, normalised by its mean/std."""
    cfg = model.visual.preprocess_cfg
    size = cfg["size"] if isinstance(cfg["size"], int) else cfg["size"][0]
    if x01.shape[-1] != size or x01.shape[-2] != size:
        x01 = F.interpolate(x01, size=(size, size), mode="bicubic", antialias=True, align_corners=False).clamp(0, 1)
    mean = torch.tensor(cfg["mean"], dtype=x01.dtype, device=x01.device).view(1, 3, 1, 1)
    std = torch.tensor(cfg["std"], dtype=x01.dtype, device=x01.device).view(1, 3, 1, 1)
    return (x01 - mean) / std


def pil_to_tensor01(images: list[Image.Image], size: int) -> torch.Tensor:
    """Centre-crop to square, resize, -> (N, 3, size, size) in [0, 1]."""
    out = []
    for im in images:
        im = center_square(im, size)
        out.append(torch.from_numpy(np.asarray(im, dtype=np.uint8).copy()).permute(2, 0, 1))
    return torch.stack(out).float() / 255


def resolve_pretrained(model_name: str, pretrained: str, cache_dir: str | None = None) -> str:
    """A local file for (model_name, pretrained): the path itself, or the tag's file in the local caches."""
    if os.path.isfile(pretrained):
        return pretrained
    cfg = open_clip.get_pretrained_cfg(model_name, pretrained)
    if not cfg:
        tags = open_clip.list_pretrained_tags_by_model(model_name)
        raise ClipWeightsMissing(f"{pretrained!r} is neither a weights file nor a known tag of {model_name} "
                                 f"(known tags: {', '.join(tags) or 'none'})")
    candidates = []
    if cfg.get("hf_hub"):
        from huggingface_hub import try_to_load_from_cache

        repo, filename = os.path.split(cfg["hf_hub"])
        names = [filename] if filename else ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]
        for name in names:
            found = try_to_load_from_cache(repo, name, cache_dir=cache_dir)
            if isinstance(found, str):
                return found
            candidates.append(f"the Hugging Face cache entry {repo}/{name}")
    if cfg.get("url"):
        path = Path(cache_dir or os.path.expanduser("~/.cache/clip")) / os.path.basename(cfg["url"])
        if path.is_file():
            return str(path)
        candidates.append(str(path))
    raise ClipWeightsMissing(
        f"the weights of {model_name} ({pretrained}) are not on this machine, and clipdiff never downloads "
        f"at run time. Copy them to {' or '.join(candidates)}, or pass the file itself: "
        f"--clip {model_name} --clip-pretrained /path/to/weights.safetensors")


class ClipEncoder:
    """A loaded CLIP with its tokenizer; embeddings come back raw (un-normalised), float32, on the CPU."""

    def __init__(self, model, tokenizer, identity: str, device: torch.device):
        self.model = model.eval().to(device)
        self.tokenizer = tokenizer
        self.identity = identity
        self.device = device
        self._text_cache: OrderedDict[str, torch.Tensor] = OrderedDict()

    @classmethod
    def load(cls, model: str = "default", pretrained: str | None = None, device: str = "auto",
             cache_dir: str | None = None) -> "ClipEncoder":
        device = resolve_device(device)
        if model == "default" or os.path.isdir(model) or model.startswith("local-dir:"):
            folder = Path(DEFAULT_CLIP_DIR if model == "default" else model.removeprefix("local-dir:"))
            if not (folder / OPEN_CLIP_CONFIG).is_file():
                hint = "train it with `python -m clipdiff train-clip`" if model == "default" else \
                    f"the folder needs {OPEN_CLIP_CONFIG} and a .safetensors file"
                raise ClipWeightsMissing(f"no CLIP found at {folder}: {hint}")
            name = f"local-dir:{folder}"
            identity = "clipdiff-flowers" if model == "default" else name
            clip = _create_model(name, device=device, weights_only=True, require_pretrained=True)
        else:
            if not pretrained:
                raise ClipWeightsMissing(f"{model} needs weights: pass --clip-pretrained TAG_OR_FILE "
                                         f"(tags: {', '.join(open_clip.list_pretrained_tags_by_model(model))})")
            path = resolve_pretrained(model, pretrained, cache_dir)
            name, identity = model, f"{model}:{pretrained}"
            clip = _create_model(model, pretrained=path, device=device, weights_only=True, require_pretrained=True)
        return cls(clip, open_clip.get_tokenizer(name), identity, device)

    # -- facts ---------------------------------------------------------------------------------------------
    @property
    def embed_dim(self) -> int:
        return int(self.model.text_projection.shape[1]) if hasattr(self.model, "text_projection") and \
            self.model.text_projection is not None else int(self.encode_text(["a"]).shape[1])

    @property
    def context_length(self) -> int:
        return int(self.tokenizer.context_length)

    @property
    def image_size(self) -> int:
        size = self.model.visual.preprocess_cfg["size"]
        return size if isinstance(size, int) else size[0]

    @property
    def logit_scale(self) -> float:
        return float(self.model.logit_scale.detach().exp())

    # -- tokens --------------------------------------------------------------------------------------------
    def tokenize(self, text: str) -> TokenView:
        tok = self.tokenizer
        n_ctx = self.context_length
        if isinstance(tok, open_clip.tokenizer.SimpleTokenizer):
            content = tok.encode(text)
            ids = [tok.sot_token_id] + content + [tok.eot_token_id]
            count = len(ids)
            kept = content[:n_ctx - 2]
            shown = [tok.sot_token_id] + kept + [tok.eot_token_id]
            pieces = ["<start>"] + [_bpe_piece(tok, i) for i in kept] + ["<end>"]
            kept_text = tok.decode(kept).strip()
        else:  # e.g. a Hugging Face tokenizer: show ids, count the non-padding ones
            shown = [int(i) for i in tok([text])[0].tolist() if int(i) != 0]
            count = len(shown)
            pieces = [str(i) for i in shown]
            kept_text = text
        return TokenView(pieces, shown, count, n_ctx, count > n_ctx, kept_text)

    # -- embeddings ----------------------------------------------------------------------------------------
    @torch.inference_mode()
    def encode_text(self, texts: list[str]) -> torch.Tensor:
        """(N, D) raw text embeddings; repeated prompts come from a small LRU cache."""
        missing = list(dict.fromkeys(t for t in texts if t not in self._text_cache))
        for start in range(0, len(missing), ENCODE_BATCH):
            chunk = missing[start:start + ENCODE_BATCH]
            tokens = self.tokenizer(chunk).to(self.device)
            emb = self.model.encode_text(tokens).float().cpu()
            for t, e in zip(chunk, emb):
                self._text_cache[t] = e
        out = torch.stack([self._text_cache[t] for t in texts]) if texts else torch.empty(0, 0)
        for t in texts:
            self._text_cache.move_to_end(t)
        while len(self._text_cache) > TEXT_CACHE_SIZE:
            self._text_cache.popitem(last=False)
        return out

    def clear_text_cache(self) -> None:
        """Forget every cached text embedding, e.g. so a benchmark pays for encoding as a first click does."""
        self._text_cache.clear()

    @torch.inference_mode()
    def encode_image(self, images) -> torch.Tensor:
        """(N, D) raw image embeddings of PIL images, or of a (N, 3, H, W) tensor in [-1, 1]."""
        if isinstance(images, torch.Tensor):
            x01 = (images.float().clamp(-1, 1) + 1) / 2
        else:
            x01 = pil_to_tensor01(list(images), self.image_size)
        out = []
        for start in range(0, len(x01), ENCODE_BATCH):
            chunk = normalize_pixels(x01[start:start + ENCODE_BATCH].to(self.device), self.model)
            out.append(self.model.encode_image(chunk).float().cpu())
        return torch.cat(out) if out else torch.empty(0, 0)


def _bpe_piece(tok, token_id: int) -> str:
    piece = tok.decoder[token_id]
    text = bytearray(tok.byte_decoder[c] for c in piece.replace("</w>", "")).decode("utf-8", errors="replace")
    return text + (" " if piece.endswith("</w>") else "")
