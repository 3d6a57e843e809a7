"""Checking what the browser or an API client sends. Whoever reaches the page can call every endpoint directly,
so these checks are the real limits: impossible values are refused in words (gr.Error), values out of range are
clamped to limits.py's bounds and the change is said twice: as a warning in the browser, and in the run's status
text (for API clients)."""
from __future__ import annotations

import math
import random
import unicodedata
from dataclasses import replace
from pathlib import Path

import gradio as gr
import numpy as np
from PIL import Image, ImageOps

from ..images import read_params
from ..pipeline import ClipDiffusionPipeline, Job, PreparedRun
from ..prompts import PromptSyntaxError, parse
from ..sampling import Frames, Sampling, default_steps, max_steps, seeds_from
from ..schedulers import REGISTRY
from .limits import (DEFAULT_STEPS, DEFAULT_W, MAX_IMAGE_PIXELS, MAX_IMAGE_STEPS, MAX_PROMPT_EDIT_FRACTIONS,
                     MAX_SWEEP_WS, MAX_TEXT_CHARS, MAX_UPLOADS, SEED_RANGE, STEPS_RANGE, W_RANGE)
from .runs import RunStatus
from .session import generated_images


class Checked:
    """One request's values, checked; `notes` says what was changed."""

    def __init__(self, quiet: bool = False):
        self.notes: list[str] = []
        self.quiet = quiet          # notes only, no toast: a check made again beside the request that says it

    def warn(self, message: str) -> None:
        self.notes.append(message)
        if not self.quiet:
            gr.Warning(message)

    def text(self, value, name: str = "text") -> str:
        if value is None:
            return ""
        if not isinstance(value, str):
            raise gr.Error(f"{name} must be text, not {type(value).__name__}.")
        if len(value) > MAX_TEXT_CHARS:
            raise gr.Error(f"{name} is {len(value):,} characters long; the limit is {MAX_TEXT_CHARS:,}.")
        return value

    def lines(self, value, limit: int, name: str = "prompts", required: bool = True) -> list[str]:
        """Non-empty lines, cleaned of control characters, at most `limit` of them."""
        lines = [clean_line(line) for line in self.text(value, name).splitlines()]
        lines = [line for line in lines if line]
        if required and not lines:
            raise gr.Error(f"Type at least one {name.rstrip('s')} (one per line); the box is empty.")
        if len(lines) > limit:
            self.warn(f"{len(lines)} {name}: using the first {limit}.")
            lines = lines[:limit]
        return lines

    def number(self, value, name: str, low: float, high: float, integer: bool = False, default=None):
        if value is None or (isinstance(value, str) and not value.strip()):
            if default is None:
                raise gr.Error(f"{name} is missing.")
            return default
        if isinstance(value, bool):
            raise gr.Error(f"{name} must be a number, not true/false.")
        try:
            x = float(value)
        except (TypeError, ValueError):
            raise gr.Error(f"{name} must be a number, not {str(value)[:40]!r}.") from None
        if not math.isfinite(x):
            raise gr.Error(f"{name} must be a finite number, not {x}.")
        clamped = min(max(x, low), high)
        if integer:
            clamped = int(round(clamped))
        shown = whole_number if integer else "{:g}".format
        if not low <= x <= high:
            self.warn(f"{name} {shown(x)} is outside {shown(low)} to {shown(high)}: using {shown(clamped)}.")
        elif clamped != x:
            self.warn(f"{name} {x:g} is not a whole number: using {clamped}.")
        return clamped

    def choice(self, value, choices, name: str) -> str:
        if value not in choices:
            raise gr.Error(f"{name} must be one of {', '.join(map(str, choices))}, not {str(value)[:40]!r}.")
        return value

    def flag(self, value, name: str) -> bool:
        if value is None:
            return False
        if isinstance(value, bool) or value in (0, 1):
            return bool(value)
        raise gr.Error(f"{name} must be true or false.")

    def seed(self, value) -> int:
        """An empty seed means a random one; the seed used is always shown back."""
        if value is None or (isinstance(value, str) and not value.strip()) or value == -1:
            return random.randint(*SEED_RANGE)
        return self.number(value, "seed", *SEED_RANGE, integer=True)

    def seeds(self, seed: int, n: int) -> list[int]:
        """The seeds of n images from `seed` (sampling.seeds_from); said when they wrap past the last seed to 0."""
        seeds = seeds_from(seed, n)
        if seeds[-1] < seed:
            self.warn(f"Seeds wrap past {SEED_RANGE[1]} to {SEED_RANGE[0]}: the images use seeds "
                      f"{', '.join(map(str, seeds))}.")
        return seeds

    def w(self, value) -> float:
        return self.number(value, "w", *W_RANGE, default=DEFAULT_W)

    def steps(self, value) -> int:
        return self.number(value, "steps", *STEPS_RANGE, integer=True, default=DEFAULT_STEPS)

    def sampling(self, w, seed, steps, sampler) -> Sampling:
        """The sampling controls' values, checked in the order the tabs show them (w None: the tab has no w). Any
        registry sampler passes here; whether this server runs it (the fast mode is opt-in) is prepare's check."""
        w, seed, steps = self.w(w), self.seed(seed), self.steps(steps)
        sampler = self.choice(sampler, tuple(REGISTRY), "sampler")
        if steps > max_steps(sampler):
            self.warn(f"The {sampler} sampler takes 1 to {max_steps(sampler)} steps: using {default_steps(sampler)}.")
            steps = default_steps(sampler)
        return Sampling(w=w, seed=seed, steps=steps, sampler=sampler)

    def number_list(self, value, name: str, low: float, high: float, limit: int, example: str,
                    ascending: bool = False) -> list[float]:
        """Comma- or space-separated numbers, each clamped to low..high, without repeats, in the order given (or
        ascending), at most `limit` of them; none is a gr.Error that shows an example."""
        found = []
        for item in self.text(value, f"{name}s").replace(",", " ").split():
            x = self.number(item, name, low, high)
            if x not in found:
                found.append(x)
        if ascending:
            found.sort()
        if not found:
            raise gr.Error(f"Give at least one {name}, e.g. {example}.")
        if len(found) > limit:
            self.warn(f"{len(found)} {name}s: using the first {limit}.")
            found = found[:limit]
        return found

    def ws(self, value) -> list[float]:
        """Comma- or space-separated guidance weights, in the order given."""
        return self.number_list(value, "w value", *W_RANGE, MAX_SWEEP_WS, "-2, -1, 0, 1, 2")

    def budget(self, s: Sampling, images: int) -> Sampling:
        """The run's sampling with its steps lowered if images x steps would exceed the per-run budget."""
        allowed = max(1, MAX_IMAGE_STEPS // max(images, 1))
        if s.steps > allowed:
            self.warn(f"{images} images x {s.steps} steps is more than one run may take ({MAX_IMAGE_STEPS:,} "
                      f"image-steps): using {allowed} steps.")
            return replace(s, steps=allowed)
        return s

    def status(self, message: str, frames: Frames | None = None) -> RunStatus:
        """What the run's status says (at these Frames: under way, done, or where it stopped), with this request's
        notes under it."""
        if frames is None:
            return RunStatus(message, notes=self.notes)
        return RunStatus.of_frames(frames, message, self.notes)

    # -- debugging a prompt (issue 15) --------------------------------------------------------------------------
    def negative(self, value) -> str:
        """A negative prompt: one line, cleaned; empty means none (guidance pushes away from the learned null)."""
        return clean_line(" ".join(self.text(value, "negative prompt").splitlines()))

    def fractions(self, value) -> list[float]:
        """Comma- or space-separated switch fractions, each clamped to 0..1, ascending and without repeats."""
        return self.number_list(value, "switch fraction", 0, 1, MAX_PROMPT_EDIT_FRACTIONS, "0, 0.25, 0.5, 0.75, 1",
                                ascending=True)

    def edit(self, text: str, name: str = "prompt"):
        """A prompt's [from:to:when] (prompts.parse), or a clear gr.Error for brackets that do not parse."""
        try:
            return parse(text)
        except PromptSyntaxError as e:
            raise gr.Error(f"{name} {shorten(text, 40)!r}: {e}.") from None

    def prepare(self, pipe: ClipDiffusionPipeline, jobs: list[Job], s: Sampling) -> PreparedRun:
        """The run's inputs (pipeline.prepare: each prompt parsed and encoded once); brackets that do not parse are
        a clear gr.Error, a switch after the last step is said."""
        try:
            run = pipe.prepare(jobs, s.steps, s.sampler)
        except PromptSyntaxError as e:
            raise gr.Error(f"prompt {shorten(e.prompt, 40)!r}: {e}.") from None
        refused = pipe.fast_problems(run)      # the fast mode: not loaded, or a feature only the teacher has
        if refused:
            raise gr.Error(" ".join(refused))
        for text, edit in dict(zip((j.prompt for j in jobs), run.edits)).items():
            if edit is not None and edit.at_step is not None and edit.at_step >= s.steps:
                self.warn(f"{shorten(text, 40)!r} switches at step {edit.at_step}, but the run has {s.steps}: it "
                          "never switches.")
        return run


def whole_number(x: float) -> str:
    """A count, a seed or a bound as the number it is (2147483647, not 2.14748e+09); a fraction as given."""
    return str(int(x)) if float(x).is_integer() else repr(float(x))


def shorten(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[:limit - 3] + "..."


def clean_line(text: str) -> str:
    """Drop control characters and lone surrogates (an API client can send those; they cannot be written
    as UTF-8, e.g. into a PNG). Format characters such as right-to-left marks and emoji joiners stay."""
    return " ".join("".join(ch for ch in text if unicodedata.category(ch) not in ("Cc", "Cs")).split())


def upload_path(value):
    """The server-side path of an uploaded file, as the browser or an API client names it (or None)."""
    if isinstance(value, dict):  # what an API client may send for a file
        value = value.get("path")
    return value if isinstance(value, (str, Path)) else None


def open_upload(path, name: str = "upload") -> Image.Image:
    """An uploaded file as an upright RGB picture, or a clear gr.Error. Never trusts the file's name."""
    path = upload_path(path)
    if path is None:
        raise gr.Error(f"{name}: expected an uploaded image file.")
    try:
        with Image.open(path) as im:
            if im.width * im.height > MAX_IMAGE_PIXELS:
                raise gr.Error(f"{name} is {im.width} x {im.height} pixels; the limit is "
                               f"{MAX_IMAGE_PIXELS:,} pixels.")
            im.seek(0)  # the first frame of an animation
            im = ImageOps.exif_transpose(im)
            if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):  # 16-bit or float grey: scale to 8 bits
                arr = np.asarray(im, dtype=np.float32)
                arr = (arr - arr.min()) / max(float(arr.max() - arr.min()), 1e-8) * 255
                im = Image.fromarray(arr.astype(np.uint8))
            if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
                im = im.convert("RGBA")
                background = Image.new("RGBA", im.size, "white")
                im = Image.alpha_composite(background, im)
            return im.convert("RGB")
    except gr.Error:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise gr.Error(f"{name} is too large to decode safely.") from None
    except (OSError, ValueError, SyntaxError, EOFError) as e:
        raise gr.Error(f"{name} is not a readable image ({type(e).__name__}).") from None


def open_uploads(files, checked: Checked) -> list[Image.Image]:
    if files is None:
        return []
    if not isinstance(files, (list, tuple)):
        files = [files]
    if len(files) > MAX_UPLOADS:
        checked.warn(f"{len(files)} images: using the first {MAX_UPLOADS}.")
        files = files[:MAX_UPLOADS]
    return [open_upload(f, f"image {i + 1}") for i, f in enumerate(files)]


def png_parameters(file) -> dict:
    """The parameters a clipdiff PNG carries (PNG text), or a clear gr.Error. Reads no pixels."""
    try:
        path = upload_path(file)
        if path is None:
            raise OSError("not a file")
        with Image.open(path) as im:
            if im.width * im.height > MAX_IMAGE_PIXELS:
                raise gr.Error("That picture is too large to read.")
            params = read_params(im)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        raise gr.Error("That file is not a readable PNG.") from None
    if not params:
        raise gr.Error("That PNG carries no clipdiff parameters (was it made by clipdiff?).")
    return params


def upload_names(files, count: int) -> list[str]:
    """What the plots and tables call the first `count` uploads: each file's own name (as the browser or API client
    sent it, without control characters or the <> that plotly reads as markup, at most 40 characters), "upload k"
    where it has none, and a second file of one name "name (2)"."""
    if not isinstance(files, (list, tuple)):
        files = [files]
    names = []
    for k, file in enumerate(files[:count]):
        path = upload_path(file)
        name = shorten(clean_line(Path(str(path)).name).replace("<", "").replace(">", ""), 40) if path else ""
        unique = name = name or f"upload {k + 1}"
        copy = 2
        while unique in names:
            unique, copy = f"{name} ({copy})", copy + 1
        names.append(unique)
    return names


def uploads_and_generated(files, include_generated, run, checked: Checked) -> tuple[list[str], list]:
    """The uploaded pictures, named by their files (`upload_names`), and, when asked, the last run's ("generated 1",
    ...)."""
    images = open_uploads(files, checked)
    names = upload_names(files, len(images))
    if checked.flag(include_generated, "include generated"):
        generated_names, generated = generated_images(run)
        names, images = names + generated_names, images + generated
    return names, images
