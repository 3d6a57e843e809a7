"""A sampling run as the tabs show it: streamed previews while it samples, then PNGs that carry their parameters,
each with its CLIP score against what conditioned it."""
from __future__ import annotations

import re
import unicodedata
from typing import Iterator

import gradio as gr
import numpy as np
from PIL import Image

from ..caveats import caveat, noise_note, noise_scores
from ..images import labelled_grid, save_png, to_pil
from ..pipeline import ClipDiffusionPipeline, Job, PreparedRun
from ..sampling import Frames, from_uint8, stream
from ..similarity import clip_score
from .context import Context
from .limits import PREVIEW_SCALE, STREAM_SCALE


def sample(ctx: Context, pipe: ClipDiffusionPipeline, run: PreparedRun, record: bool = False) -> Iterator[Frames]:
    """The prepared run as the app streams it: previews at most every ctx.preview_every_s, then the final images
    (with every step recorded for playback when record); or, once Stop sets ctx.stop, the step's x0 marked
    `stopped`."""
    progress = ctx.models.backend.run(pipe, run, record_every=1 if record else 0)
    return stream(progress, ctx.preview_every_s, ctx.stop)


# How long Stop waits for the run to close before Gradio cancels it: a run stops within one sampler step (well
# under a second here, a Ray replica's included), so only a stuck run meets Gradio's cancel.
STOP_WAIT_S = 5.0


def stop_run(ctx: Context, unstarted_stops, request: gr.Request = None):
    """Stop: the session's run stops after the step in progress and says itself where it stopped (its last output,
    so no preview can come after it); this answers once that run has closed (serving.fairness). With no run in
    flight (one may still wait in the queue) or one that did not close in time, the count of such stops moves on:
    its change is Gradio's cue to cancel the run (wiring.on_stop)."""
    if ctx.in_flight.stop(getattr(request, "session_hash", None), STOP_WAIT_S):
        return gr.skip()
    return unstarted_stops + 1     # a gr.State: the server's own value, never one from the browser


def strip(ctx: Context, pipe: ClipDiffusionPipeline, run: PreparedRun,
          labels: list[str]) -> Iterator[tuple[Image.Image, Frames]]:
    """The run as one labelled row of images, with the Frames it shows."""
    for frames in sample(ctx, pipe, run):
        yield labelled_grid(frames.images, rows=1, cols=len(run.jobs), col_labels=labels), frames


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


def preview_gallery(frames: Frames) -> list:
    """The gallery while sampling (or stopped): one picture holding every image's current x0 (row-major, as the final
    PNGs), shown at its own size (CSS in page.py): up to 4 images at the results' 128 px each, more at half that, so
    a preview stays one small file."""
    scale = PREVIEW_SCALE if len(frames.images) <= 4 else STREAM_SCALE
    if frames.stopped:
        caption = (f"UNFINISHED (stopped at step {frames.step} of {frames.total}): the x0 guess at that step, "
                   "not a result")
    else:
        caption = f"step {frames.step} of {frames.total}: the {len(frames.images)} image(s) as they look now"
    return [(preview_grid(frames.images, scale=scale), caption)]


def clip_scores(pipe: ClipDiffusionPipeline, images: np.ndarray, run: PreparedRun) -> list[float]:
    image_emb = pipe.encoder.encode_image(from_uint8(images))
    return clip_score(image_emb, run.final).tolist()   # a switched prompt: the one it ends on


def caption(job: Job, score: float) -> str:
    """What a gallery says under an image: its prompt (a switch as [from:to:when]), w, seed, CLIP score, and the
    negative prompt when it had one."""
    negative = f" | negative: {job.negative.strip()}" if job.negative.strip() else ""
    return f"{job.text} | w {job.w:g} | seed {job.seed} | CLIP score {score:.1f}{negative}"


def save_results(ctx: Context, pipe: ClipDiffusionPipeline, images: np.ndarray,
                 run: PreparedRun) -> tuple[list, list[dict], list[float]]:
    """The final images as PNGs in the output folder, each carrying its parameters and its CLIP score:
    (gallery of (path, caption), parameters, scores). Each caption gives the score beside what pure noise scores
    against the same prompt, and says when the run's settings make it unreliable (clipdiff.caveats)."""
    scores = clip_scores(pipe, images, run)
    noise = noise_scores(pipe.encoder, run.final, images.shape[1]).tolist()
    gallery, params = [], []
    for image, job, score, baseline in zip(images, run.jobs, scores, noise):
        p = pipe.parameters_of(job, run.steps, run.sampler)
        p["clip_score"] = round(score, 2)
        path = save_png(to_pil(image), ctx.outputs.path(".png", file_name(job.text, job.w, job.seed)), p)
        unreliable = " UNRELIABLE" if caveat(run.steps, run.sampler, job.w) else ""
        gallery.append((str(path), f"{caption(job, score)} ({noise_note(baseline)}){unreliable}"))
        params.append(p)
    return gallery, params, scores


def score_note(run: PreparedRun) -> str:
    """What a run's status says about its CLIP scores: how to read them, and why they say little when they do."""
    reasons = list(dict.fromkeys(r for r in (caveat(run.steps, run.sampler, j.w) for j in run.jobs) if r))
    if reasons:
        return "**These CLIP scores say little:** " + "; ".join(reasons) + "."
    return "(In brackets: what pure noise scores against the same prompt. A score means something only well above it.)"


def file_name(prompt: str, w=None, seed=None) -> str:
    """A download's name that says what it is: the prompt's words (ASCII letters and digits only, at most 40
    characters), then w and seed: `a-deep-red-rose-flower_w2_seed7`."""
    words = re.sub(r"[^a-z0-9]+", "-", unicodedata.normalize("NFKD", str(prompt)).encode("ascii", "ignore")
                   .decode().lower()).strip("-")[:40].strip("-") or "clipdiff"
    parts = [words] + ([f"w{float(w):g}"] if isinstance(w, (int, float)) else []) + \
        ([f"seed{int(seed)}"] if isinstance(seed, int) else [])
    return "_".join(parts).replace("+", "")   # w1e+06 -> w1e06: '+' is no file-name character here


REFUSED = "**Nothing ran.** A refused request says why in the corner: change it and try again."
STEP = re.compile(r"step (\d+) of (\d+)")


STOPPED = "**Stopped at step"    # how a stopped run's status begins (stopped_note)


def says_stopped(status) -> bool:
    return isinstance(status, str) and status.startswith(STOPPED)


def running_step(status) -> tuple[str, str] | None:
    """(k, n) when a run's status says it is under way at step k of n; None for any other status."""
    if not isinstance(status, str) or "Done" in status or says_stopped(status):
        return None
    found = STEP.search(status)
    return found.groups() if found else None


def stopped_note(step, total) -> str:
    """What a stopped run's status says."""
    return (f"{STOPPED} {step} of {total}.** The pictures are unfinished: each is the model's guess of the "
            "final image at that step, still noisy. Nothing was saved.")


def stopped(status):
    """A run's status, once Gradio has cancelled it (a run that did not stop in time): "Stopped at step k of n" where
    it said "...step k of n" (the last preview's step), so it does not look hung; any other status stays."""
    step = running_step(status)
    if step is None:
        return gr.skip()
    notes = status.split("\n\n", 1)[1:]     # the run's own notes (clamped values) stay under it
    return "\n\n".join([stopped_note(*step)] + notes)


def refused(status):
    """A run event's failure: a refusal (nothing ran; the corner says why) or a run Gradio cancelled (see
    `stopped`). Either way a new value here also replaces the "Error" mark Gradio leaves on the event's outputs
    until their next update."""
    if says_stopped(status):
        return status       # the run said it stopped: it stays (sent again, so the Error mark still goes)
    return REFUSED if running_step(status) is None else stopped(status)


def finished(status) -> None:
    """The gate before what follows a run (wiring.after_finished): a run that stopped part way made nothing new."""
    if says_stopped(status):
        raise gr.Error("stopped", visible=False, print_exception=False)
