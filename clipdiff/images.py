"""Pictures out: uint8 frames to PIL, labelled grids, PNGs that carry their generation parameters."""
from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont, PngImagePlugin

from .sampling import from_uint8

PARAMS_KEY = "clipdiff"


def center_square(im: Image.Image, size: int) -> Image.Image:
    """RGB, centre-cropped to a square, resized to (size, size): how every picture enters a model."""
    im = im.convert("RGB")
    w, h = im.size
    s = min(w, h)
    im = im.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s))
    return im.resize((size, size), Image.Resampling.BICUBIC)


def resized_unit(images: np.ndarray, size: int) -> torch.Tensor:
    """uint8 (N, S, S, 3) -> float (N, 3, size, size) in [-1, 1], antialiased."""
    x = from_uint8(images)
    if x.shape[-1] != size:
        x = torch.cat([F.interpolate(x[s:s + 1024], size=(size, size), mode="bilinear", antialias=True)
                       for s in range(0, len(x), 1024)])
    return x.clamp(-1, 1)


def to_pil(frame: np.ndarray, scale: int = 1) -> Image.Image:
    im = Image.fromarray(frame)
    return im.resize((im.width * scale, im.height * scale), Image.Resampling.NEAREST) if scale > 1 else im


def data_uri(frame: np.ndarray) -> str:
    """A small uint8 frame as a PNG data URI: a picture that travels inside JSON."""
    buffer = io.BytesIO()
    Image.fromarray(frame).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def png_info(params: dict) -> PngImagePlugin.PngInfo:
    info = PngImagePlugin.PngInfo()
    info.add_text(PARAMS_KEY, json.dumps(params, sort_keys=True))
    info.add_text("parameters", ", ".join(f"{k}: {v}" for k, v in params.items()))  # what other tools show
    return info


def save_png(image: Image.Image, path: str | Path, params: dict) -> Path:
    path = Path(path)
    image.save(path, pnginfo=png_info(params))
    return path


def read_params(image: Image.Image | str | Path) -> dict | None:
    """The parameters a clipdiff PNG carries, or None if it carries none (or they are not valid JSON)."""
    im = Image.open(image) if isinstance(image, (str, Path)) else image
    text = getattr(im, "text", None) or im.info
    raw = text.get(PARAMS_KEY) if text else None
    if not raw:
        return None
    try:
        params = json.loads(raw)
    except (json.JSONDecodeError, TypeError):
        return None
    return params if isinstance(params, dict) else None


def label_font(size: int):
    """Pillow's own font at size px, for the labels drawn on grids and strips."""
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has one bitmap size
        return ImageFont.load_default()


def _fit(draw: ImageDraw.ImageDraw, text: str, font, width: int) -> str:
    """The text, cut to `width` pixels with "..." where it is wider."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "...", font=font) > width:
        text = text[:-1]
    return text + "..."


def _wrap(draw: ImageDraw.ImageDraw, text: str, font, width: int, max_lines: int = 3) -> list[str]:
    """The text in lines of at most `width` pixels, so that a column's label never runs into the next one: a word
    wider than that is cut with "...", and so is the last line when more would not fit."""
    lines, line = [], ""
    for word in text.split():
        trial = f"{line} {word}".strip()
        if draw.textlength(trial, font=font) <= width or not line:
            line = trial
        else:
            lines.append(line)
            line = word
    lines.append(line)
    if len(lines) > max_lines:
        lines = lines[:max_lines - 1] + [lines[max_lines - 1] + " " + " ".join(lines[max_lines:]) + " ..."]
    return [_fit(draw, line, font, width) for line in lines]


def labelled_grid(frames: np.ndarray, rows: int, cols: int, row_labels: list[str] | None = None,
                  col_labels: list[str] | None = None, cell: int = 96, pad: int = 4) -> Image.Image:
    """frames (rows * cols, H, W, 3) in row-major order -> one picture with row and column labels."""
    font = label_font(12)
    left = 64 if row_labels else 0
    top = 44 if col_labels else 0
    canvas = Image.new("RGB", (left + cols * (cell + pad) + pad, top + rows * (cell + pad) + pad), "white")
    draw = ImageDraw.Draw(canvas)
    for k, frame in enumerate(frames[:rows * cols]):
        r, c = divmod(k, cols)
        im = Image.fromarray(frame).resize((cell, cell), Image.Resampling.NEAREST)
        canvas.paste(im, (left + pad + c * (cell + pad), top + pad + r * (cell + pad)))
    for c, label in enumerate(col_labels or []):
        for i, line in enumerate(_wrap(draw, label, font, cell - 2)):    # glyphs overhang their advance a little
            draw.text((left + pad + c * (cell + pad), 2 + i * 14), line, fill="black", font=font)
    for r, label in enumerate(row_labels or []):
        draw.text((4, top + pad + r * (cell + pad) + cell // 2 - 7), label, fill="black", font=font)
    return canvas
