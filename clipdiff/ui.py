"""The Gradio app: one gr.Blocks over the clipdiff core. The only module that imports gradio.

Handlers are plain functions of the values the browser (or a gradio_client script) sends: they check
and clamp every value, call core functions, and turn the results into pictures, plots and text. No
model maths lives here. Anything that runs a model shares one concurrency group ("model"); cheap
handlers (token view, scrubbing, parameter loading) have their own, so they stay quick during a run.
"""
from __future__ import annotations

import atexit
import functools
import inspect
import logging
import math
import random
import shutil
import tempfile
import time
import unicodedata
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import gradio as gr
import numpy as np
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots
from PIL import Image, ImageOps

from .atlas import Atlas
from .checkpoints import DEFAULT_ATLAS_DIR, DEFAULT_UNET_DIR, CheckpointError
from .diffusion import load_diffusion
from .encoders import ClipEncoder, ClipWeightsMissing, pil_to_tensor01
from .images import labelled_grid, read_params, save_png, to_pil
from . import tour
from .interpolate import mix, slerp_path
from .pipeline import (DEFAULT_SAMPLER, DEFAULT_STEPS, DEFAULT_W, REFERENCE_PROMPTS, REFERENCE_WS,
                       ClipDiffusionPipeline, Job, images_per_prompt, model_id_of, sweep)
from .playback import PlaybackRun, export_gif, frames_to_tensor, prompt_x0_cosines
from .sampling import to_uint8
from .schedulers import SAMPLERS
from .serving.backend import Backend, LocalBackend
from .serving.fairness import AlreadyRunning, InFlight
from .similarity import clip_score, cosine_matrix, nearest, softmax_over_candidates

log = logging.getLogger("clipdiff.ui")

# -- limits: what one request may ask for; everything from the browser or the API is clamped to these ------
MAX_TEXT_CHARS = 10_000          # a prompt box longer than this is rejected, not truncated
MAX_PROMPTS = 8                  # prompts per run (one per line)
MAX_IMAGES_PER_PROMPT = 8
MAX_BATCH = 16                   # images sampled together in one run
MAX_SWEEP_PROMPTS = 4
MAX_SWEEP_WS = 9
MAX_STEPS = 400                  # the training schedule's T: more steps than timesteps means nothing
MAX_IMAGE_STEPS = 1600           # images x steps per run: one attendee's run must not hold the room for long
W_LIMIT = 10.0                   # also the sliders' range; the reference sweeps -2..2
SEED_MAX = 2**31 - 1
MAX_UPLOADS = 16
MAX_UPLOAD_SIZE = "10mb"
MAX_IMAGE_PIXELS = 40_000_000    # refuse to decode bigger pictures (decompression bombs)
INTERPOLATION_POINTS = (2, 12)
MAX_SIMILARITY_TEXTS = 32
NEAREST_CAPTIONS = 5
# A session's last run (its frames for playback) is dropped 30 minutes after it was made, or an hour after the
# browser tab closed (Gradio's fixed grace period for reopening), whichever Gradio sees first.
SESSION_TTL_S = 1800
OUTPUT_MAX_AGE_S = 3600          # our PNGs and GIFs on disk
LIGHT_CONCURRENCY = 4
PLAY_FRAME_S = 0.15
PREVIEW_SCALE = 4
# While sampling, one small picture of every image's current x0 goes out at most this often (the first step's
# always): each streamed output is a file Gradio writes and the browser (or client) downloads, and sending
# every step's gallery made the app ~10x slower than the sampler itself (benchmarks/README.md).
PREVIEW_EVERY_S = 0.15
SAMPLER_INFO = ("ddpm: the reference's stochastic sampler, wants hundreds of steps; ddim: deterministic; dpmsolver: "
                "DPM-Solver++ (2nd order), evenly spaced steps; dpmsolver-karras: the same, steps packed at low noise")
STREAM_SCALE = 2                 # preview pixels per image pixel (the final PNGs are full size)

COSINE_NOTE = """**Why is even a matching pair far from 1?** CLIP puts texts and images in two regions of its
sphere (the *modality gap*), so a perfect caption still scores well below 1: about 0.2-0.4 with OpenAI's
CLIP, about 0.5-0.6 with our small flowers CLIP (wrong pairs about 0.1). What CLIP learned is the *ranking*:
the right caption beats the wrong ones. The softmax turns that ranking into probabilities, sharpened by the
model's learned temperature (logit scale), which is why small cosine differences become confident choices."""

TOUR_INTRO = """## New here? Start with the tour
Each experiment below sets up one of the other tabs and runs it: you land on the result and can keep
changing settings from there. Every run takes a few seconds on a laptop with the shipped models."""

CSS = ".pixelated img, .pixelated canvas { image-rendering: pixelated; }"
TRAIN_HINT = "get the shipped models with `python -m clipdiff train-default`"


# -- the models the app serves --------------------------------------------------------------------------------
@dataclass
class Models:
    """What the app serves. Each part may be missing; `problems` says what and how to get it, in words."""
    encoder: ClipEncoder | None = None
    pipeline: ClipDiffusionPipeline | None = None
    atlas: Atlas | None = None
    problems: list[str] = field(default_factory=list)
    backend: Backend = field(default_factory=LocalBackend)   # where the sampler steps run (app.py --backend)

    @classmethod
    def load(cls, unet: str | Path = DEFAULT_UNET_DIR, clip: str = "default", clip_pretrained: str | None = None,
             atlas: str | Path | None = DEFAULT_ATLAS_DIR, device: str = "auto") -> "Models":
        models = cls()
        try:
            models.encoder = ClipEncoder.load(clip, clip_pretrained, device)
        except (ClipWeightsMissing, CheckpointError, OSError, ValueError, RuntimeError) as e:
            models.problems.append(problem("CLIP model", e, "--clip DIR"))
        if models.encoder is not None:
            try:
                model, config = load_diffusion(Path(unet), models.encoder.device)
                models.pipeline = ClipDiffusionPipeline(models.encoder, model, config, model_id_of(Path(unet)))
            except (CheckpointError, OSError, ValueError, RuntimeError) as e:
                models.problems.append(problem("diffusion model", e, "--unet DIR"))
        if atlas is not None:
            try:
                models.atlas = Atlas.load(atlas)
            except (CheckpointError, OSError, ValueError, KeyError) as e:
                models.problems.append(problem("embedding atlas", e, "--atlas DIR"))
        models._check_atlas_fits()
        return models

    def _check_atlas_fits(self) -> None:
        if self.atlas is None or self.encoder is None:
            return
        if self.atlas.image_emb.shape[1] != self.encoder.embed_dim:
            self.problems.append(f"The atlas holds {self.atlas.image_emb.shape[1]}-d embeddings of "
                                 f"{self.atlas.clip_identity}, but the loaded CLIP gives {self.encoder.embed_dim}-d "
                                 "ones; the map is off. Pass --atlas for an atlas built with this CLIP.")
            self.atlas = None

    def need_encoder(self) -> ClipEncoder:
        if self.encoder is None:
            raise gr.Error(self.missing("CLIP model"))
        return self.encoder

    def need_pipeline(self) -> ClipDiffusionPipeline:
        if self.pipeline is None:
            raise gr.Error(self.missing("diffusion model"))
        return self.pipeline

    def need_atlas(self) -> Atlas:
        if self.atlas is None:
            raise gr.Error(self.missing("embedding atlas"))
        return self.atlas

    def missing(self, what: str) -> str:
        return f"The {what} is not loaded. " + " ".join(self.problems) if self.problems else \
            f"The {what} is not loaded; {TRAIN_HINT}."

    def status_markdown(self) -> str:
        if not self.problems:
            parts = [f"diffusion model `{self.pipeline.model_id}`", f"CLIP `{self.encoder.identity}`"]
            if self.atlas is not None:
                parts.append(f"atlas of {len(self.atlas.image_emb):,} images")
            return "Loaded: " + ", ".join(parts) + "."
        return "**Something is missing; the rest of the app still works.**\n\n" + \
            "\n".join(f"- {p}" for p in self.problems)


def problem(what: str, error: Exception, flag: str) -> str:
    """A load failure in words: what is missing, why, and how to get it."""
    message = str(error).rstrip(".")
    hint = "" if "train-default" in message else f"; {TRAIN_HINT}"
    return f"No {what}: {message}{hint} (or pass {flag})."


# -- checking what the browser or an API client sends --------------------------------------------------------
class Checked:
    """Checks one request's values. Impossible values raise gr.Error; values out of range are clamped and
    the change is said twice: as a warning in the browser, and in the run's status text (for API clients)."""

    def __init__(self):
        self.notes: list[str] = []

    def warn(self, message: str) -> None:
        self.notes.append(message)
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
        if clamped != x:
            self.warn(f"{name} {x:g} is outside {low:g} to {high:g} (or not whole): using {clamped:g}.")
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
            return random.randint(0, SEED_MAX)
        return self.number(value, "seed", 0, SEED_MAX, integer=True)

    def ws(self, value) -> list[float]:
        """Comma- or space-separated guidance weights."""
        text = self.text(value, "w values").replace(",", " ")
        ws = []
        for item in text.split():
            w = self.number(item, "w value", -W_LIMIT, W_LIMIT)
            if w not in ws:
                ws.append(w)
        if not ws:
            raise gr.Error("Give at least one w value, e.g. -2, -1, 0, 1, 2.")
        if len(ws) > MAX_SWEEP_WS:
            self.warn(f"{len(ws)} w values: using the first {MAX_SWEEP_WS}.")
            ws = ws[:MAX_SWEEP_WS]
        return ws

    def w(self, value) -> float:
        return self.number(value, "w", -W_LIMIT, W_LIMIT, default=DEFAULT_W)

    def sampling(self, steps, sampler) -> tuple[int, str]:
        return (self.number(steps, "steps", 1, MAX_STEPS, integer=True, default=DEFAULT_STEPS),
                self.choice(sampler, SAMPLERS, "sampler"))

    def budget(self, steps: int, images: int) -> int:
        """Steps, lowered if images x steps would exceed the per-run budget."""
        allowed = max(1, MAX_IMAGE_STEPS // max(images, 1))
        if steps > allowed:
            self.warn(f"{images} images x {steps} steps is more than one run may take ({MAX_IMAGE_STEPS:,} "
                      f"image-steps): using {allowed} steps.")
        return min(steps, allowed)

    def status(self, text: str) -> str:
        return "\n\n".join([text] + [f"Note: {n}" for n in self.notes])


def shorten(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[:limit - 3] + "..."


def clean_line(text: str) -> str:
    """Drop control characters and lone surrogates (an API client can send those; they cannot be written
    as UTF-8, e.g. into a PNG). Format characters such as right-to-left marks and emoji joiners stay."""
    return " ".join("".join(ch for ch in text if unicodedata.category(ch) not in ("Cc", "Cs")).split())


def open_upload(path, name: str = "upload") -> Image.Image:
    """An uploaded file as an upright RGB picture, or a clear gr.Error. Never trusts the file's name."""
    if isinstance(path, dict):  # what an API client may send for a file
        path = path.get("path")
    if not isinstance(path, (str, Path)):
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


# -- files we hand to the browser -------------------------------------------------------------------------------
class OutputFolder:
    """PNGs and GIFs for the browser, named by random ids (never by user text), pruned after an hour."""

    def __init__(self):
        self.folder = Path(tempfile.mkdtemp(prefix="clipdiff-app-"))
        self._last_prune = 0.0
        atexit.register(shutil.rmtree, self.folder, ignore_errors=True)

    def path(self, suffix: str) -> Path:
        self._prune()
        return self.folder / f"{uuid.uuid4().hex}{suffix}"

    def _prune(self) -> None:
        now = time.time()
        if now - self._last_prune < 60:
            return
        self._last_prune = now
        for f in self.folder.iterdir():
            try:
                if now - f.stat().st_mtime > OUTPUT_MAX_AGE_S:
                    f.unlink()
            except OSError:
                pass


# -- a session's last run -------------------------------------------------------------------------------------
@dataclass
class LastRun:
    """What a session keeps of its last generation: images, their parameters and the recorded steps."""
    frames: np.ndarray                 # (N, H, W, 3) uint8 final images
    labels: list[str]
    params: list[dict]
    scores: list[float]                # CLIP score of each image against its condition
    playback: PlaybackRun
    conditions: torch.Tensor | None = None   # raw CLIP embeddings the samples followed, for the playback cosines

    def playback_with_cosines(self, encoder: ClipEncoder) -> PlaybackRun:
        """The playback, its prompt-vs-x0 cosines computed on first use: a CLIP image pass over every recorded
        x0 (~10 % of a run here), done after the final images are out rather than before."""
        pb = self.playback
        if pb.cosines is None and pb.records and self.conditions is not None:
            pb.cosines = prompt_x0_cosines(encoder, pb.records, self.conditions)
        return pb


def release_run(run) -> None:
    """gr.State's delete callback: the session is gone or expired; let its frames go now."""
    if isinstance(run, LastRun):
        run.playback.release()


# -- sampling, shared by generate, sweep, interpolation and variations ------------------------------------------
def sample_stream(pipe: ClipDiffusionPipeline, jobs: list[Job], steps: int, sampler: str, record: bool,
                  preview_every_s: float = PREVIEW_EVERY_S, backend: Backend | None = None):
    """Yield ("step", k, total, x0 frames) after the first sampler step and then after any step that ends at
    least preview_every_s after the last preview went out; then ("done", frames, records). Steps in between
    are not decoded at all. Leaving this generator (a cancelled event) stops the sampler between two steps."""
    records = []
    last_sent = None
    for p in (backend or LocalBackend()).run(pipe, jobs, steps, sampler, record_every=1 if record else 0):
        if p.record is not None:
            records.append(p.record)
        if p.images is not None:
            yield "done", to_uint8(p.images), records
        elif last_sent is None or time.perf_counter() - last_sent >= preview_every_s:
            yield "step", p.step, p.total, to_uint8(p.x0)
            last_sent = time.perf_counter()   # after the consumer sent it: its own time does not count


def strip_stream(pipe: ClipDiffusionPipeline, jobs: list[Job], steps: int, sampler: str, labels: list[str],
                 preview_every_s: float = PREVIEW_EVERY_S, backend: Backend | None = None):
    """sample_stream as one labelled row of images: yields (strip, "step k of n") while sampling, then
    (final strip, None)."""
    for event in sample_stream(pipe, jobs, steps, sampler, record=False, preview_every_s=preview_every_s,
                               backend=backend):
        frames = event[3] if event[0] == "step" else event[1]
        progress = f"step {event[1]} of {event[2]}" if event[0] == "step" else None
        yield labelled_grid(frames, rows=1, cols=len(jobs), col_labels=labels), progress


def preview_grid(frames: np.ndarray, cols: int | None = None, scale: int = STREAM_SCALE, pad: int = 2) -> np.ndarray:
    """All of a run's frames (N, H, W, 3) as one small picture, row-major, white gaps: one file per preview."""
    n, h, w, _ = frames.shape
    cols = cols or min(n, 4)
    rows = -(-n // cols)
    big = frames.repeat(scale, axis=1).repeat(scale, axis=2)
    ch, cw = h * scale, w * scale
    canvas = np.full((rows * (ch + pad) - pad, cols * (cw + pad) - pad, 3), 255, dtype=np.uint8)
    for k in range(n):
        r, c = divmod(k, cols)
        canvas[r * (ch + pad):r * (ch + pad) + ch, c * (cw + pad):c * (cw + pad) + cw] = big[k]
    return canvas


def preview_gallery(frames: np.ndarray, step: int, total: int) -> list:
    """The gallery while sampling: one picture holding every image's current x0 (row-major, as the final PNGs)."""
    return [(preview_grid(frames), f"step {step} of {total}: the {len(frames)} image(s) as they look now")]


def clip_scores(pipe: ClipDiffusionPipeline, frames: np.ndarray, jobs: list[Job]) -> list[float]:
    image_emb = pipe.encoder.encode_image(frames_to_tensor(frames))
    return clip_score(image_emb, pipe.conditions(jobs)).tolist()


def save_results(pipe, outputs: OutputFolder, frames, jobs, steps, sampler, scores) -> tuple[list, list[dict]]:
    gallery, params = [], []
    for frame, job, score in zip(frames, jobs, scores):
        p = pipe.parameters_of(job, steps, sampler)
        p["clip_score"] = round(score, 2)
        path = save_png(to_pil(frame), outputs.path(".png"), p)
        gallery.append((str(path), f"{job.prompt} | w {job.w:g} | seed {job.seed} | CLIP score {score:.1f}"))
        params.append(p)
    return gallery, params


# -- plots -----------------------------------------------------------------------------------------------------
def playback_figure(run: PlaybackRun, sample: int) -> go.Figure:
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.12, subplot_titles=(
        "cosine(condition, CLIP image embedding of the guided x0)", "noise prediction RMS"))
    t = run.timesteps
    for i, label in enumerate(run.labels):
        if run.cosines is not None and len(run.cosines):
            fig.add_trace(go.Scatter(x=t, y=run.cosines[:, i], mode="lines+markers", name=label,
                                     line={"width": 3 if i == sample else 1}, opacity=1 if i == sample else 0.35,
                                     legendgroup="cos"), row=1, col=1)
    for name, series in run.noise_norms(sample).items():
        fig.add_trace(go.Scatter(x=t, y=series, mode="lines", name=f"eps {name}", legendgroup="eps"), row=2, col=1)
    fig.update_xaxes(autorange="reversed", title_text="timestep t (sampling runs left to right)", row=2, col=1)
    fig.update_layout(height=520, margin={"l": 40, "r": 10, "t": 40, "b": 40}, legend={"font": {"size": 10}})
    return fig


def similarity_figure(texts: list[str], images: list[str], cosines, probs, softmax_over: str) -> go.Figure:
    fig = make_subplots(rows=1, cols=2, shared_yaxes=True, horizontal_spacing=0.04, subplot_titles=(
        "raw cosine", f"softmax over {softmax_over} (x logit scale)"))
    short = [t if len(t) <= 40 else t[:37] + "..." for t in texts]
    for col, (z, scale) in enumerate(((cosines, "RdBu"), (probs, "Viridis")), start=1):
        fig.add_trace(go.Heatmap(z=z, x=images, y=short, colorscale=scale, texttemplate="%{z:.2f}",
                                 showscale=False, zmid=0 if col == 1 else None), row=1, col=col)
    fig.update_yaxes(autorange="reversed")
    fig.update_layout(height=max(300, 60 + 45 * len(texts)), margin={"l": 10, "r": 10, "t": 40, "b": 40})
    return fig


def map_figure(atlas: Atlas, method: str, show_texts: bool, live: list[dict]) -> go.Figure:
    coords = atlas.coords(method)
    xy = coords["images"]
    species = [atlas.class_names[i] for i in atlas.labels]
    fig = go.Figure()
    fig.add_trace(go.Scattergl(x=xy[:, 0], y=xy[:, 1], mode="markers", name="dataset images",
                               marker={"size": 4, "color": atlas.labels, "colorscale": "Turbo", "opacity": 0.6},
                               hovertext=species, hoverinfo="text"))
    if show_texts and len(atlas.texts):
        txy = coords["texts"]
        fig.add_trace(go.Scattergl(x=txy[:, 0], y=txy[:, 1], mode="markers", name="texts (species, captions)",
                                   marker={"size": 5, "symbol": "x", "color": "rgba(90,90,90,0.5)"},
                                   hovertext=atlas.texts, hoverinfo="text"))
    for modality, symbol in (("text", "star"), ("image", "diamond")):
        points = [p for p in live if p["modality"] == modality]
        if points:
            fig.add_trace(go.Scatter(
                x=[p["x"] for p in points], y=[p["y"] for p in points], mode="markers+text",
                name=f"your {modality}s", text=[p["label"][:30] for p in points], textposition="top center",
                hovertext=[p["label"] for p in points], hoverinfo="text",
                marker={"size": 16, "symbol": symbol, "color": "black" if modality == "text" else "crimson",
                        "line": {"width": 1, "color": "white"}}))
    fig.update_layout(height=620, margin={"l": 10, "r": 10, "t": 30, "b": 10},
                      title=f"{method}: hover for labels; colours are species")
    return fig


# -- the app ---------------------------------------------------------------------------------------------------
class UnexpectedError(gr.Error):
    """A handler's failure we did not foresee, as the client sees it (its own name, so tests can tell it from
    a refusal of bad input)."""


def answers_clearly(fn):
    """Every handler's last line of defence: an unexpected exception reaches the browser or API client as one
    plain sentence, while its text and traceback (which may name files on the server) go to the server's log;
    the app keeps serving. gr.Error (our clear messages) and cancellation pass through untouched."""
    def unexpected(error: Exception) -> UnexpectedError:
        log.exception("%s failed", fn.__name__)
        return UnexpectedError(f"Something went wrong in {fn.__name__.replace('_', ' ')} ({type(error).__name__}). "
                        "The app is still running; try again or change the input. The server log has the details.")

    if inspect.isgeneratorfunction(fn):   # Gradio streams only from generator functions: stay one
        @functools.wraps(fn)
        def streaming(*args, **kwargs):
            try:
                yield from fn(*args, **kwargs)
            except gr.Error:
                raise
            except Exception as e:
                raise unexpected(e) from None
        return streaming

    @functools.wraps(fn)
    def answering(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except Exception as e:
            raise unexpected(e) from None
    return answering


BUSY_MESSAGE = ("You already have a generation running in this session: wait for it to finish, or press Stop, "
                "before starting another.")


def one_per_session(in_flight: InFlight):
    """A sampling handler that refuses a session's second run while its first is in flight (serving.fairness).
    Gradio hands the handler its request (for the session hash) through the `request` parameter added here;
    the API's inputs do not change."""
    def decorate(fn):
        signature = inspect.signature(fn)
        with_request = signature.replace(parameters=[*signature.parameters.values(), inspect.Parameter(
            "request", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None, annotation=gr.Request)])

        @functools.wraps(fn)
        def guarded(*args, **kwargs):
            bound = with_request.bind(*args, **kwargs)
            request = bound.arguments.pop("request", None)
            try:
                yield from in_flight.stream(getattr(request, "session_hash", None), fn(*bound.args, **bound.kwargs))
            except AlreadyRunning:
                raise gr.Error(BUSY_MESSAGE) from None
        guarded.__signature__ = with_request
        guarded.__annotations__ = {**fn.__annotations__, "request": gr.Request}
        return guarded
    return decorate


def build_app(models: Models, concurrency: int = 1, preview_every_s: float = PREVIEW_EVERY_S) -> gr.Blocks:
    """preview_every_s: at most one streamed preview this often while sampling (0: after every step)."""
    outputs = OutputFolder()
    in_flight = InFlight()   # one sampling run per browser session at a time
    model_group = {"concurrency_id": "model", "concurrency_limit": concurrency}
    light_group = {"concurrency_id": "light", "concurrency_limit": LIGHT_CONCURRENCY}
    sampler_choices = list(SAMPLERS)
    atlas_methods = list(Atlas.METHODS)
    context_length = models.encoder.context_length if models.encoder is not None else 77

    # ---- Generate ----
    @answers_clearly
    def show_tokens(text):
        """The tokens each prompt becomes, and a warning for any prompt longer than the context."""
        if models.encoder is None:
            return [], models.missing("CLIP model")
        if isinstance(text, str) and len(text) > MAX_TEXT_CHARS:
            return [], f"**Too long:** {len(text):,} characters; the limit is {MAX_TEXT_CHARS:,}."
        text = text if isinstance(text, str) else ""
        lines = [clean_line(line) for line in text.splitlines()]
        lines = [line for line in lines if line][:MAX_PROMPTS]
        pieces, summary = [], []
        for n, line in enumerate(lines, start=1):
            view = models.encoder.tokenize(line)
            pieces += [(p, "ab"[i % 2]) for i, p in enumerate(view.pieces)] + [("\n", None)]
            summary.append(f"Prompt {n}: **{view.count} / {view.context_length}** tokens; ids "
                           f"`{' '.join(map(str, view.ids))}`")
            if view.truncated:
                kept = view.kept_text.replace("`", "'")
                summary.append(f"  - **Warning: truncated.** Only the first {view.context_length} tokens "
                               f"reach the model; it reads: `{kept}`")
        return pieces, "\n".join(f"- {s}" if not s.startswith("  ") else s for s in summary) or "No prompt yet."

    def random_seed():
        return random.randint(0, SEED_MAX)

    @answers_clearly
    @one_per_session(in_flight)
    def generate(prompts_text, w, steps, sampler, seed, n_images):
        """Stream previews of the guided x0 while sampling, then the final PNGs (parameters inside)."""
        pipe = models.need_pipeline()
        checked = Checked()
        prompts = checked.lines(prompts_text, MAX_PROMPTS)
        w = checked.w(w)
        steps, sampler = checked.sampling(steps, sampler)
        seed = checked.seed(seed)
        n = checked.number(n_images, "number of images", 1, MAX_IMAGES_PER_PROMPT, integer=True, default=1)
        if n * len(prompts) > MAX_BATCH:
            n = max(1, MAX_BATCH // len(prompts))
            checked.warn(f"At most {MAX_BATCH} images per run: making {n} per prompt.")
        for p in prompts:
            view = pipe.encoder.tokenize(p)
            if view.truncated:
                checked.warn(f"Prompt truncated to {view.context_length} tokens: {view.kept_text[:60]!r}...")
        jobs = images_per_prompt(prompts, w, seed, n)
        steps = checked.budget(steps, len(jobs))
        labels = [f"{shorten(j.prompt)} (seed {j.seed})" for j in jobs]
        started = time.perf_counter()
        for event in sample_stream(pipe, jobs, steps, sampler, record=True, preview_every_s=preview_every_s,
                                   backend=models.backend):
            if event[0] == "step":
                _, k, total, frames = event
                yield preview_gallery(frames, k, total), checked.status(f"Sampling: step {k} of {total}"), \
                    seed, gr.skip()
            else:
                _, frames, records = event
                scores = clip_scores(pipe, frames, jobs)
                gallery, params = save_results(pipe, outputs, frames, jobs, steps, sampler, scores)
                run = LastRun(frames, labels, params, scores, PlaybackRun(labels, list(records)), pipe.conditions(jobs))
                best = int(np.argmax(scores))
                yield gallery, checked.status(f"Done: {len(jobs)} image(s), seed {seed}, {steps} {sampler} steps "
                                              f"in {time.perf_counter() - started:.1f} s. "
                                              f"Best CLIP score: {scores[best]:.1f} ({shorten(labels[best])})."), seed, run

    @answers_clearly
    def load_params(file):
        """Fill the Generate controls from a PNG that clipdiff made (its parameters ride in PNG text)."""
        if file is None:
            return [gr.skip()] * 6
        checked = Checked()
        path = file.get("path") if isinstance(file, dict) else file
        try:
            if not isinstance(path, (str, Path)):
                raise OSError("not a file")
            with Image.open(path) as im:
                if im.width * im.height > MAX_IMAGE_PIXELS:
                    raise gr.Error("That picture is too large to read.")
                params = read_params(im)
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
            raise gr.Error("That file is not a readable PNG.") from None
        if not params:
            raise gr.Error("That PNG carries no clipdiff parameters (was it made by clipdiff?).")
        return parameters_to_controls(params, checked)

    def parameters_to_controls(params: dict, checked: Checked):
        prompt = checked.lines(str(params.get("prompt", "")), 1)[0]
        w = checked.w(params.get("w"))
        steps = checked.number(params.get("steps"), "steps", 1, MAX_STEPS, integer=True, default=DEFAULT_STEPS)
        sampler = params.get("sampler") if params.get("sampler") in SAMPLERS else DEFAULT_SAMPLER
        seed = checked.number(params.get("seed"), "seed", 0, SEED_MAX, integer=True, default=0)
        gr.Info(f"Loaded the parameters of {prompt[:40]!r}, seed {seed}.")
        return prompt, w, steps, sampler, seed, 1

    def remember_selection(evt: gr.SelectData):
        return evt.index if isinstance(evt.index, int) else None

    @answers_clearly
    def reuse_selected(run, index):
        if not isinstance(run, LastRun) or not isinstance(index, int) or not 0 <= index < len(run.params):
            raise gr.Error("Click one of the last run's images first.")
        return parameters_to_controls(run.params[index], Checked())

    # ---- Playback ----
    @answers_clearly
    def show_playback(run):
        """Runs after Generate (the browser chains it): the playback tab, its CLIP cosines computed now."""
        if not isinstance(run, LastRun) or not run.playback.records:
            return gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip()
        pb = run.playback_with_cosines(models.need_encoder())
        last = len(pb.records) - 1
        return (gr.update(choices=[(label, i) for i, label in enumerate(pb.labels)], value=0),
                gr.update(minimum=0, maximum=last, value=last), pb.frame(last, 0), step_caption(pb, last, 0),
                playback_figure(pb, 0))

    def step_caption(pb: PlaybackRun, step: int, sample: int) -> str:
        cos = f", cosine to the prompt {pb.cosines[step, sample]:.3f}" if pb.cosines is not None else ""
        return f"Recorded step {step + 1} of {len(pb.records)}: timestep t = {pb.records[step].timestep}{cos}"

    def playback_position(run, sample, step) -> tuple[PlaybackRun, int, int]:
        if not isinstance(run, LastRun) or not run.playback.records:
            raise gr.Error("No run to play back yet: generate an image first (Generate tab).")
        pb = run.playback
        checked = Checked()
        sample = checked.number(sample, "image", 0, pb.num_samples - 1, integer=True, default=0)
        step = checked.number(step, "step", 0, len(pb.records) - 1, integer=True, default=0)
        return pb, sample, step

    @answers_clearly
    def scrub(run, sample, step):
        """Reads a recorded frame; never runs the model."""
        if not isinstance(run, LastRun) or not run.playback.records:
            return gr.skip(), "No run yet: generate an image first."
        pb, sample, step = playback_position(run, sample, step)
        return pb.frame(step, sample), step_caption(pb, step, sample)

    @answers_clearly
    def pick_sample(run, sample, step):
        if not isinstance(run, LastRun) or not run.playback.records:
            return gr.skip(), gr.skip(), gr.skip()
        pb, sample, step = playback_position(run, sample, step)
        run.playback_with_cosines(models.need_encoder())
        frame, caption = scrub(run, sample, step)
        return frame, caption, playback_figure(pb, sample)

    @answers_clearly
    def play(run, sample, step):
        """Step the slider through the recorded steps; each new value redraws through scrub."""
        pb, sample, step = playback_position(run, sample, step)
        start = 0 if step >= len(pb.records) - 1 else step
        for k in range(start, len(pb.records)):
            yield k
            time.sleep(PLAY_FRAME_S)

    @answers_clearly
    def gif(run, sample):
        pb, sample, _ = playback_position(run, sample, 0)
        return str(export_gif(pb, sample, outputs.path(".gif")))

    # ---- Sweep ----
    @answers_clearly
    @one_per_session(in_flight)
    def run_sweep(prompts_text, ws_text, seed, steps, sampler):
        """prompts x w from one seed: rows are w, columns prompts. Streams the grid of x0 previews."""
        pipe = models.need_pipeline()
        checked = Checked()
        prompts = checked.lines(prompts_text, MAX_SWEEP_PROMPTS)
        ws = checked.ws(ws_text)
        seed = checked.seed(seed)
        steps, sampler = checked.sampling(steps, sampler)
        jobs = sweep(prompts, ws, seed)
        steps = checked.budget(steps, len(jobs))
        row_labels, col_labels = [f"w = {w:g}" for w in ws], prompts

        def grid(frames):
            return labelled_grid(frames, rows=len(ws), cols=len(prompts), row_labels=row_labels, col_labels=col_labels)

        for event in sample_stream(pipe, jobs, steps, sampler, record=False, preview_every_s=preview_every_s,
                                   backend=models.backend):
            if event[0] == "step":
                _, k, total, frames = event
                yield grid(frames), gr.skip(), checked.status(f"Sampling {len(jobs)} images: step {k} of {total}"), \
                    seed
            else:
                frames = event[1]
                scores = clip_scores(pipe, frames, jobs)
                gallery, _ = save_results(pipe, outputs, frames, jobs, steps, sampler, scores)
                yield grid(frames), gallery, checked.status(
                    f"Done: {len(prompts)} prompt(s) x {len(ws)} w value(s), seed {seed}."), seed

    # ---- Similarity ----
    def generated_images(run) -> tuple[list[str], list]:
        if not isinstance(run, LastRun):
            return [], []
        return [f"generated {i + 1}" for i in range(len(run.frames))], [to_pil(f) for f in run.frames]

    @answers_clearly
    def similarity(texts_text, files, include_generated, softmax_over, run):
        """Texts x images cosines, softmax over candidates, and each image's nearest captions."""
        encoder = models.need_encoder()
        checked = Checked()
        texts = checked.lines(texts_text, MAX_SIMILARITY_TEXTS, name="texts")
        softmax_over = checked.choice(softmax_over, ("texts", "images"), "softmax over")
        images = open_uploads(files, checked)
        names = [f"upload {i + 1}" for i in range(len(images))]
        if checked.flag(include_generated, "include generated"):
            gen_names, gen_images = generated_images(run)
            names, images = names + gen_names, images + gen_images
        if not images:
            raise gr.Error("Upload an image, or generate one and tick 'include my generated images'.")
        text_emb, image_emb = encoder.encode_text(texts), encoder.encode_image(images)
        cosines = cosine_matrix(text_emb, image_emb)                       # (texts, images)
        probs = softmax_over_candidates(cosines, encoder.logit_scale, dim=0 if softmax_over == "texts" else 1)
        bank_texts, bank = (models.atlas.texts, models.atlas.text_emb) if models.atlas is not None else \
            (texts, text_emb)
        rows = [[name, rank + 1, bank_texts[nb.index], round(nb.cosine, 4)]
                for name, neighbours in zip(names, nearest(image_emb, bank, NEAREST_CAPTIONS))
                for rank, nb in enumerate(neighbours)]
        result = {"texts": texts, "images": names, "cosine": cosines.tolist(), "softmax": probs.tolist(),
                  "softmax_over": softmax_over, "logit_scale": encoder.logit_scale, "notes": checked.notes}
        return similarity_figure(texts, names, cosines.numpy(), probs.numpy(), softmax_over), result, rows

    @answers_clearly
    def rank_last_run(run):
        """The last run's images, best CLIP score against their own prompt first: pick the best of N."""
        if not isinstance(run, LastRun):
            raise gr.Error("Generate some images first (Generate tab).")
        order = np.argsort(run.scores)[::-1]
        return [(to_pil(run.frames[i], PREVIEW_SCALE), f"#{r + 1} CLIP score {run.scores[i]:.1f}: {run.labels[i]}")
                for r, i in enumerate(order)]

    # ---- Embedding map ----
    @answers_clearly
    def embed_map(method, prompts_text, files, include_generated, show_texts, run):
        """The atlas in 2-D with your prompts and images placed on it."""
        atlas = models.need_atlas()
        encoder = models.need_encoder()
        checked = Checked()
        method = checked.choice(method, atlas_methods, "method")
        prompts = checked.lines(prompts_text, MAX_PROMPTS, required=False)
        images = open_uploads(files, checked)
        names = [f"upload {i + 1}" for i in range(len(images))]
        if checked.flag(include_generated, "include generated"):
            gen_names, gen_images = generated_images(run)
            names, images = names + gen_names, images + gen_images
        live = []
        for labels, modality, emb in ((prompts, "text", encoder.encode_text(prompts) if prompts else None),
                                      (names, "image", encoder.encode_image(images) if images else None)):
            if emb is not None:
                xy = atlas.place(emb.numpy(), method, modality)
                live += [{"label": label, "modality": modality, "x": float(x), "y": float(y)}
                         for label, (x, y) in zip(labels, xy)]
        figure = map_figure(atlas, method, checked.flag(show_texts, "show texts"), live)
        return figure, {"method": method, "points": live, "notes": checked.notes}

    # ---- Interpolate and vary ----
    @answers_clearly
    @one_per_session(in_flight)
    def interpolate(prompt_a, prompt_b, points, w, seed, steps, sampler):
        """Images along the slerp between two prompts' embeddings, one seed for all."""
        pipe = models.need_pipeline()
        checked = Checked()
        a = checked.lines(prompt_a, 1, name="first prompt")[0]
        b = checked.lines(prompt_b, 1, name="second prompt")[0]
        n = checked.number(points, "images", *INTERPOLATION_POINTS, integer=True, default=6)
        w = checked.w(w)
        seed = checked.seed(seed)
        steps, sampler = checked.sampling(steps, sampler)
        ends = pipe.encoder.encode_text([a, b])
        fractions, path = slerp_path(ends[0], ends[1], n)
        jobs = [Job(f"{a} -> {b} @ {t:.2f}", w, seed, embedding=e) for t, e in zip(fractions, path)]
        labels = [f"{t:.2f}" for t in fractions]
        steps = checked.budget(steps, len(jobs))
        for strip, progress in strip_stream(pipe, jobs, steps, sampler, labels, preview_every_s, models.backend):
            yield strip, checked.status(f"{a!r} -> {b!r}: {progress or f'Done, seed {seed}.'}"), seed

    @answers_clearly
    @one_per_session(in_flight)
    def vary(file, count, w, seed, steps, sampler):
        """Condition on an uploaded image's CLIP image embedding: the model was trained on those."""
        pipe = models.need_pipeline()
        checked = Checked()
        image = open_upload(file, "image")
        n = checked.number(count, "variations", 1, MAX_IMAGES_PER_PROMPT, integer=True, default=4)
        w = checked.w(w)
        seed = checked.seed(seed)
        steps, sampler = checked.sampling(steps, sampler)
        emb = pipe.encoder.encode_image([image])[0]
        seen = to_uint8(pil_to_tensor01([image], pipe.encoder.image_size) * 2 - 1)[0]
        jobs = [Job("variation of an uploaded image", w, seed + k, embedding=emb) for k in range(n)]
        steps = checked.budget(steps, len(jobs))
        seen_sent = False
        for event in sample_stream(pipe, jobs, steps, sampler, record=False, preview_every_s=preview_every_s,
                                   backend=models.backend):
            if event[0] == "step":
                yield preview_gallery(event[3], event[1], event[2]), \
                    gr.skip() if seen_sent else to_pil(seen, PREVIEW_SCALE), \
                    checked.status(f"step {event[1]} of {event[2]}"), seed
                seen_sent = True
            else:
                scores = clip_scores(pipe, event[1], jobs)
                gallery, _ = save_results(pipe, outputs, event[1], jobs, steps, sampler, scores)
                yield gallery, to_pil(seen, PREVIEW_SCALE), checked.status(f"Done: {n} variation(s)."), seed

    @answers_clearly
    @one_per_session(in_flight)
    def mix_prompts(prompt_a, prompt_b, weight, w, seed, steps, sampler):
        """The first prompt, a weighted mix of both prompts' directions, the second prompt: one seed for all three."""
        pipe = models.need_pipeline()
        checked = Checked()
        a = checked.lines(prompt_a, 1, name="first prompt")[0]
        b = checked.lines(prompt_b, 1, name="second prompt")[0]
        weight = checked.number(weight, "mix weight", 0, 1, default=0.5)
        w = checked.w(w)
        seed = checked.seed(seed)
        steps, sampler = checked.sampling(steps, sampler)
        ends = pipe.encoder.encode_text([a, b])
        mixed = Job(f"{1 - weight:g} x {a} + {weight:g} x {b}", w, seed, embedding=mix(ends[0], ends[1], weight))
        jobs = [Job(a, w, seed), mixed, Job(b, w, seed)]
        labels = [shorten(a, 40), f"mix, weight {weight:g}", shorten(b, 40)]
        steps = checked.budget(steps, len(jobs))
        for strip, progress in strip_stream(pipe, jobs, steps, sampler, labels, preview_every_s, models.backend):
            yield strip, checked.status(f"{1 - weight:g} x {a!r} + {weight:g} x {b!r}: "
                                        f"{progress or f'Done, seed {seed}.'}"), seed

    # ---- layout ----
    with gr.Blocks(title="clipdiff", analytics_enabled=False, delete_cache=(1800, OUTPUT_MAX_AGE_S)) as demo:
        gr.Markdown("# clipdiff: CLIP-conditioned diffusion you can watch\n" + models.status_markdown(),
                    elem_id="model-status")
        run_state = gr.State(None, time_to_live=SESSION_TTL_S, delete_callback=release_run)
        with gr.Tabs() as tabs:
            with gr.Tab("Tour", id="tour"):
                gr.Markdown(TOUR_INTRO)
                tour_buttons = []
                for experiment in tour.EXPERIMENTS:
                    with gr.Row(equal_height=False, elem_id=f"tour-{experiment.id}"):
                        with gr.Column(scale=5):
                            gr.Markdown(f"### {experiment.title}\n{experiment.explanation}")
                        with gr.Column(scale=1, min_width=200):
                            for i, tour_run in enumerate(experiment.runs):
                                button = gr.Button(tour_run.label, size="sm", variant="primary" if i == 0 else "secondary",
                                                   elem_id=f"tour-{experiment.id}-{i}")
                                tour_buttons.append((button, tour_run))

            with gr.Tab("Generate", id="generate"):
                with gr.Row():
                    with gr.Column(scale=2):
                        prompts = gr.Textbox(label="Prompts (one per line)", lines=3, max_length=MAX_TEXT_CHARS,
                                             value=REFERENCE_PROMPTS[2], elem_id="prompts")
                        tokens = gr.HighlightedText(label=f"Tokens (context length {context_length})",
                                                    color_map={"a": "#c7e0ff", "b": "#ffe3b3"},
                                                    show_inline_category=False, elem_id="tokens")
                        token_summary = gr.Markdown(elem_id="token-summary")
                        gr.Examples([[p] for p in REFERENCE_PROMPTS] + [["\n".join(REFERENCE_PROMPTS)]],
                                    inputs=[prompts], label="Reference prompts")
                    with gr.Column(scale=1):
                        w = gr.Slider(-W_LIMIT, W_LIMIT, value=DEFAULT_W, step=0.25, label="guidance w",
                                      info="eps = (1 + w) eps_cond - w eps_uncond; w = -1 is unconditional")
                        steps = gr.Slider(1, MAX_STEPS, value=DEFAULT_STEPS, step=1, label="steps")
                        sampler = gr.Radio(sampler_choices, value=DEFAULT_SAMPLER, label="sampler", info=SAMPLER_INFO)
                        with gr.Row():
                            seed = gr.Number(0, precision=0, label="seed (the seed used is shown here)", scale=3)
                            dice = gr.Button("Random", scale=1)
                        n_images = gr.Slider(1, MAX_IMAGES_PER_PROMPT, value=2, step=1, label="images per prompt")
                with gr.Row():
                    go_button = gr.Button("Generate", variant="primary", elem_id="generate")
                    stop = gr.Button("Stop", variant="stop", elem_id="stop")
                status = gr.Markdown(elem_id="status")
                gallery = gr.Gallery(label="Results (PNGs carry their parameters; click one, then 'Use parameters')",
                                     columns=4, height="auto", object_fit="contain", format="png",
                                     elem_id="gallery", elem_classes=["pixelated"])
                with gr.Row():
                    reuse = gr.Button("Use parameters of the selected image")
                    png_in = gr.File(label="...or load parameters from a clipdiff PNG", file_types=[".png"],
                                     type="filepath")
                selected = gr.State(None)

            with gr.Tab("Guidance sweep", id="sweep"):
                with gr.Row():
                    sw_prompts = gr.Textbox(label="Prompts (columns)", lines=3, value="\n".join(REFERENCE_PROMPTS))
                    with gr.Column():
                        sw_ws = gr.Textbox(label="w values (rows)", value=", ".join(f"{x:g}" for x in REFERENCE_WS),
                                           elem_id="sweep-ws")
                        sw_seed = gr.Number(0, precision=0, label="seed (one for every cell)")
                        sw_steps = gr.Slider(1, MAX_STEPS, value=DEFAULT_STEPS, step=1, label="steps")
                        sw_sampler = gr.Radio(sampler_choices, value=DEFAULT_SAMPLER, label="sampler", info=SAMPLER_INFO)
                with gr.Row():
                    sw_go = gr.Button("Run sweep", variant="primary", elem_id="sweep")
                    sw_stop = gr.Button("Stop", variant="stop")
                sw_status = gr.Markdown()
                sw_grid = gr.Image(label="w (rows) x prompt (columns), same seed", type="pil", format="png",
                                   elem_id="sweep-grid")
                sw_gallery = gr.Gallery(label="Cells as PNGs", columns=7, height="auto", format="png",
                                        elem_classes=["pixelated"])

            with gr.Tab("Denoising playback", id="playback"):
                gr.Markdown("Generate first; every step of the last run is recorded. Scrubbing shows recorded "
                            "frames, nothing is recomputed.")
                with gr.Row():
                    pb_sample = gr.Dropdown(choices=[], label="image", type="value", allow_custom_value=True,
                                            elem_id="pb-sample")
                    pb_play = gr.Button("Play", elem_id="pb-play")
                    pb_gif = gr.Button("Export GIF")
                pb_step = gr.Slider(0, 1, value=0, step=1, label="recorded step (left: noise, right: image)",
                                    elem_id="pb-step")
                pb_caption = gr.Markdown(elem_id="pb-caption")
                pb_frame = gr.Image(label="x_t | guided x0 | conditional x0 | unconditional x0", type="pil",
                                    format="png", elem_id="pb-frame", elem_classes=["pixelated"])
                pb_plot = gr.Plot(label="when does the image commit to the prompt?")
                pb_file = gr.File(label="GIF")

            with gr.Tab("Similarity", id="similarity"):
                with gr.Row():
                    si_texts = gr.Textbox(label="Texts (one per line)", lines=4, value="\n".join(REFERENCE_PROMPTS))
                    with gr.Column():
                        si_files = gr.File(label="Images", file_count="multiple", file_types=["image"],
                                           type="filepath")
                        si_generated = gr.Checkbox(True, label="include my generated images")
                        si_over = gr.Radio(["texts", "images"], value="texts",
                                           label="softmax over (the candidates)")
                si_go = gr.Button("Compare", variant="primary")
                si_plot = gr.Plot(elem_id="similarity-plot")
                gr.Markdown(COSINE_NOTE)
                si_nearest = gr.Dataframe(headers=["image", "rank", "nearest caption", "cosine"],
                                          label="nearest captions of each image", interactive=False)
                si_json = gr.JSON(label="matrices", open=False)
                si_rank = gr.Button("Rank my last run by CLIP score")
                si_ranked = gr.Gallery(label="best first", columns=8, height="auto", elem_classes=["pixelated"])

            with gr.Tab("Embedding map", id="map"):
                if models.atlas is None:
                    gr.Markdown(f"**The embedding map needs an atlas.** {models.missing('embedding atlas')}")
                with gr.Row():
                    em_method = gr.Radio(atlas_methods, value=atlas_methods[0], label="view",
                                         info="umap-centered subtracts each modality's mean: the modality gap "
                                              "closes; pca is a linear view")
                    em_texts = gr.Checkbox(True, label="show atlas texts")
                    em_generated = gr.Checkbox(True, label="place my generated images")
                with gr.Row():
                    em_prompts = gr.Textbox(label="Prompts to place (one per line)", lines=3,
                                            value="\n".join(REFERENCE_PROMPTS))
                    em_files = gr.File(label="Images to place", file_count="multiple", file_types=["image"],
                                       type="filepath")
                em_go = gr.Button("Draw map", variant="primary")
                em_plot = gr.Plot(elem_id="map-plot")
                em_json = gr.JSON(label="placed points", open=False)

            with gr.Tab("Interpolate and vary", id="interpolate"):
                gr.Markdown("### Slerp between two prompts (one seed)")
                with gr.Row():
                    ip_a = gr.Textbox(REFERENCE_PROMPTS[0], label="from")
                    ip_b = gr.Textbox(REFERENCE_PROMPTS[2], label="to")
                with gr.Row():
                    ip_n = gr.Slider(*INTERPOLATION_POINTS, value=6, step=1, label="images")
                    ip_w = gr.Slider(-W_LIMIT, W_LIMIT, value=DEFAULT_W, step=0.25, label="w")
                    ip_seed = gr.Number(0, precision=0, label="seed")
                    ip_steps = gr.Slider(1, MAX_STEPS, value=DEFAULT_STEPS, step=1, label="steps")
                    ip_sampler = gr.Radio(sampler_choices, value=DEFAULT_SAMPLER, label="sampler", info=SAMPLER_INFO)
                with gr.Row():
                    ip_go = gr.Button("Interpolate", variant="primary")
                    ip_stop = gr.Button("Stop", variant="stop")
                ip_status = gr.Markdown()
                ip_strip = gr.Image(label="slerp strip", type="pil", format="png", elem_id="ip-strip")
                gr.Markdown("### Weighted mix of the same two prompts (one seed)")
                with gr.Row():
                    mx_weight = gr.Slider(0, 1, value=0.5, step=0.05, label="weight of the second prompt",
                                          info="0: the first prompt alone; 1: the second alone")
                    mx_go = gr.Button("Mix", variant="primary")
                mx_status = gr.Markdown()
                mx_strip = gr.Image(label="first | mix | second", type="pil", format="png", elem_id="mix-strip")
                gr.Markdown("### Variations of an image (conditioned on its CLIP image embedding)")
                with gr.Row():
                    va_file = gr.File(label="image", file_types=["image"], type="filepath")
                    va_seen = gr.Image(label="what CLIP sees", type="pil", elem_classes=["pixelated"])
                    with gr.Column():
                        va_n = gr.Slider(1, MAX_IMAGES_PER_PROMPT, value=4, step=1, label="variations")
                        va_w = gr.Slider(-W_LIMIT, W_LIMIT, value=DEFAULT_W, step=0.25, label="w")
                        va_seed = gr.Number(0, precision=0, label="seed")
                        va_steps = gr.Slider(1, MAX_STEPS, value=DEFAULT_STEPS, step=1, label="steps")
                        va_sampler = gr.Radio(sampler_choices, value=DEFAULT_SAMPLER, label="sampler", info=SAMPLER_INFO)
                with gr.Row():
                    va_go = gr.Button("Vary", variant="primary")
                    va_stop = gr.Button("Stop", variant="stop")
                va_status = gr.Markdown()
                va_gallery = gr.Gallery(label="variations", columns=4, height="auto", format="png", elem_id="va-gallery",
                                        elem_classes=["pixelated"])

        # ---- events ----
        prompts.change(show_tokens, prompts, [tokens, token_summary], api_name="tokens", show_progress="hidden",
                       **light_group)
        demo.load(show_tokens, prompts, [tokens, token_summary], api_visibility="private", **light_group)
        dice.click(random_seed, None, seed, api_visibility="private", queue=False)
        gen_event = go_button.click(generate, [prompts, w, steps, sampler, seed, n_images],
                                    [gallery, status, seed, run_state], api_name="generate", **model_group)
        gen_event.then(show_playback, run_state, [pb_sample, pb_step, pb_frame, pb_caption, pb_plot],
                       api_visibility="private", **model_group)
        stop.click(None, None, None, cancels=[gen_event])
        gallery.select(remember_selection, None, selected, api_visibility="private", **light_group)
        reuse.click(reuse_selected, [run_state, selected], [prompts, w, steps, sampler, seed, n_images],
                    api_visibility="private", **light_group)
        png_in.upload(load_params, png_in, [prompts, w, steps, sampler, seed, n_images], api_name="load_params",
                      **light_group)

        sw_event = sw_go.click(run_sweep, [sw_prompts, sw_ws, sw_seed, sw_steps, sw_sampler],
                               [sw_grid, sw_gallery, sw_status, sw_seed], api_name="sweep", **model_group)
        sw_stop.click(None, None, None, cancels=[sw_event])

        pb_step.change(scrub, [run_state, pb_sample, pb_step], [pb_frame, pb_caption], api_visibility="private",
                       show_progress="hidden", **light_group)
        pb_sample.input(pick_sample, [run_state, pb_sample, pb_step], [pb_frame, pb_caption, pb_plot],
                         api_visibility="private", show_progress="hidden", **light_group)
        pb_play.click(play, [run_state, pb_sample, pb_step], pb_step, api_visibility="private",
                      show_progress="hidden", **light_group)
        pb_gif.click(gif, [run_state, pb_sample], pb_file, api_name="playback_gif", **light_group)

        si_go.click(similarity, [si_texts, si_files, si_generated, si_over, run_state],
                    [si_plot, si_json, si_nearest], api_name="similarity", **model_group)
        si_rank.click(rank_last_run, run_state, si_ranked, api_name="rank", **light_group)

        em_go.click(embed_map, [em_method, em_prompts, em_files, em_generated, em_texts, run_state],
                    [em_plot, em_json], api_name="embed_map", **model_group)

        ip_event = ip_go.click(interpolate, [ip_a, ip_b, ip_n, ip_w, ip_seed, ip_steps, ip_sampler],
                               [ip_strip, ip_status, ip_seed], api_name="interpolate", **model_group)
        va_event = va_go.click(vary, [va_file, va_n, va_w, va_seed, va_steps, va_sampler],
                               [va_gallery, va_seen, va_status, va_seed], api_name="vary", **model_group)
        mx_event = mx_go.click(mix_prompts, [ip_a, ip_b, mx_weight, ip_w, ip_seed, ip_steps, ip_sampler],
                               [mx_strip, mx_status, ip_seed], api_name="mix", **model_group)
        ip_stop.click(None, None, None, cancels=[ip_event, mx_event])
        va_stop.click(None, None, None, cancels=[va_event])

        # ---- Tour: a button fills the controls, switches tab, then runs the tabs' own handlers ----
        def tour_controls(run: tour.Run) -> dict:
            """The control values one tour run sets, and the tab it lands on."""
            g, then = run.generate, run.then
            values = {tabs: gr.Tabs(selected=run.tab)}
            if g is not None:
                values.update({prompts: "\n".join(g.prompts), w: g.w, steps: g.steps, sampler: g.sampler,
                               seed: g.seed, n_images: g.images_per_prompt})
            if isinstance(then, tour.Sweep):
                values.update({sw_prompts: "\n".join(then.prompts), sw_ws: ", ".join(f"{x:g}" for x in then.ws),
                               sw_seed: then.seed, sw_steps: then.steps, sw_sampler: then.sampler})
            elif isinstance(then, tour.Similarity):
                values.update({si_texts: "\n".join(then.texts), si_files: None, si_generated: True,
                               si_over: then.softmax_over})
            elif isinstance(then, tour.Map):
                values.update({em_method: then.method, em_prompts: "\n".join(then.prompts), em_files: None,
                               em_generated: False, em_texts: then.show_texts})
            elif isinstance(then, (tour.Interpolate, tour.Mix)):
                values.update({ip_a: then.a, ip_b: then.b, ip_w: then.w, ip_seed: then.seed, ip_steps: then.steps,
                               ip_sampler: then.sampler})
                values.update({ip_n: then.points} if isinstance(then, tour.Interpolate) else {mx_weight: then.weight})
            elif isinstance(then, tour.Vary):
                values.update({va_n: then.count, va_w: then.w, va_seed: then.seed, va_steps: then.steps,
                               va_sampler: then.sampler})
            return values

        @answers_clearly
        def first_generated_image(run):
            """The last run's first image as a PNG (parameters inside), for the Variations input."""
            if not isinstance(run, LastRun):
                raise gr.Error("Generate an image first (Generate tab).")
            return str(save_png(to_pil(run.frames[0]), outputs.path(".png"), run.params[0]))

        tour_outputs = [tabs, prompts, w, steps, sampler, seed, n_images, sw_prompts, sw_ws, sw_seed, sw_steps,
                        sw_sampler, si_texts, si_files, si_generated, si_over, em_method, em_prompts, em_files,
                        em_generated, em_texts, ip_a, ip_b, ip_n, ip_w, ip_seed, ip_steps, ip_sampler, mx_weight,
                        va_n, va_w, va_seed, va_steps, va_sampler]
        then_handlers = {
            tour.Sweep: (run_sweep, [sw_prompts, sw_ws, sw_seed, sw_steps, sw_sampler],
                         [sw_grid, sw_gallery, sw_status, sw_seed], model_group),
            tour.Similarity: (similarity, [si_texts, si_files, si_generated, si_over, run_state],
                              [si_plot, si_json, si_nearest], model_group),
            tour.Map: (embed_map, [em_method, em_prompts, em_files, em_generated, em_texts, run_state],
                       [em_plot, em_json], model_group),
            tour.Interpolate: (interpolate, [ip_a, ip_b, ip_n, ip_w, ip_seed, ip_steps, ip_sampler],
                               [ip_strip, ip_status, ip_seed], model_group),
            tour.Mix: (mix_prompts, [ip_a, ip_b, mx_weight, ip_w, ip_seed, ip_steps, ip_sampler],
                       [mx_strip, mx_status, ip_seed], model_group),
            tour.Vary: (vary, [va_file, va_n, va_w, va_seed, va_steps, va_sampler],
                        [va_gallery, va_seen, va_status, va_seed], model_group),
        }
        private = {"api_visibility": "private"}
        for button, tour_run in tour_buttons:
            event = button.click(lambda r=tour_run: tour_controls(r), None, tour_outputs, **private, **light_group)
            if tour_run.generate is not None:
                event = event.success(generate, [prompts, w, steps, sampler, seed, n_images],
                                      [gallery, status, seed, run_state], **private, **model_group)
                event = event.success(show_playback, run_state, [pb_sample, pb_step, pb_frame, pb_caption, pb_plot],
                                      **private, **model_group)
            if isinstance(tour_run.then, tour.Vary):
                event = event.success(first_generated_image, run_state, va_file, **private, **light_group)
            if type(tour_run.then) in then_handlers:
                fn, inputs, outs, group = then_handlers[type(tour_run.then)]
                event.success(fn, inputs, outs, **private, **group)
    return demo


def serve(demo: gr.Blocks, host: str = "127.0.0.1", port: int | None = None, share: bool = False,
          concurrency: int = 1, max_queue: int = 16, prevent_thread_lock: bool = False, quiet: bool = False,
          auth: list[tuple[str, str]] | None = None):
    """Queue, then launch with the safe defaults: local only, no share link, capped uploads, no extras.
    auth: (user, password) logins that the page and the API ask for (None: no login)."""
    demo.queue(max_size=max_queue, default_concurrency_limit=concurrency)
    return demo.launch(server_name=host, server_port=port, share=share, max_file_size=MAX_UPLOAD_SIZE,
                       show_error=True, ssr_mode=False, mcp_server=False, enable_monitoring=False, pwa=False,
                       prevent_thread_lock=prevent_thread_lock, quiet=quiet, css=CSS, auth=auth)
