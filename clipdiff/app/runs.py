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
from ..runtimes import runtime_of
from ..sampling import Frames, from_uint8, run_ahead, stream
from ..similarity import clip_score
from .context import Context
from .limits import PREVIEW_SCALE, STREAM_SCALE


def sample(ctx: Context, pipe: ClipDiffusionPipeline, run: PreparedRun, record: bool = False) -> Iterator[Frames]:
    """The prepared run as the app streams it: previews at most every ctx.preview_interval(), then the final images
    (with every step recorded for playback when record); or, once Stop sets ctx.stop, the step's x0 marked
    `stopped`. The run samples on while a preview is on its way (sampling.run_ahead)."""
    progress = ctx.models.backend.run(pipe, run, record_every=1 if record else 0)
    return stream(run_ahead(progress), ctx.preview_interval(), ctx.stop)


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
    runtime = runtime_of(pipe.model)     # bf16 makes other pictures than fp32: the caption says so, as the PNG does
    runtime_note = "" if runtime.exact else f" | U-Net in {runtime.label}"
    for image, job, score, baseline in zip(images, run.jobs, scores, noise):
        p = pipe.parameters_of(job, run.steps, run.sampler)
        p["clip_score"] = round(score, 2)
        path = save_png(to_pil(image), ctx.outputs.path(".png", file_name(job.text, job.w, job.seed)), p)
        unreliable = " UNRELIABLE" if caveat(run.steps, run.sampler, job.w) else ""
        gallery.append((str(path), f"{caption(job, score)} ({noise_note(baseline)}){unreliable}{runtime_note}"))
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


class RunStatus(str):
    """What a run's status says (the Markdown the page shows, as a str: the status component, API clients and tests
    read its text) and the outcome it is rendered from: the step reached of how many, whether the run is done,
    stopped part way or refused, and the request's notes (values that were changed). What follows a run reads these
    fields, never the text."""
    step: int | None
    of: int | None
    done: bool
    stopped: bool
    refused: bool
    message: str
    notes: tuple[str, ...]

    def __new__(cls, message: str = "", step: int | None = None, of: int | None = None, done: bool = False,
                stopped: bool = False, refused: bool = False, notes=()):
        notes = tuple(notes)
        if stopped:
            head = stopped_note(step, of) + (f" {message}" if message else "")
        elif refused:
            head = f"**Nothing ran.** {message}".rstrip()
        else:
            head = message
        status = super().__new__(cls, "\n\n".join([head] + [f"Note: {n}" for n in notes]))
        status.step, status.of, status.done, status.stopped, status.refused = step, of, done, stopped, refused
        status.message, status.notes = message, notes
        return status

    def __reduce__(self):    # copies (gr.State keeps one per session) rebuild it from its fields
        return (type(self), (self.message, self.step, self.of, self.done, self.stopped, self.refused, self.notes))

    @classmethod
    def of_frames(cls, frames: Frames, message: str, notes=()) -> "RunStatus":
        """A run's status at these Frames: under way at their step, done, or (stopped) where it stopped."""
        return cls("" if frames.stopped else message, frames.step, frames.total, frames.done, frames.stopped,
                   notes=notes)

    @classmethod
    def refusal(cls, reason: str) -> "RunStatus":
        return cls(reason, refused=True)

    @property
    def running(self) -> bool:
        return self.step is not None and not (self.done or self.stopped or self.refused)

    def failed(self, reason: str) -> "RunStatus":
        """What the status says when the event ends without finishing (Gradio cancelled it; an error): where the run
        stopped when it was under way; a stop or a refusal as said; else that nothing ran (and why, if known)."""
        if self.running:
            return RunStatus(reason, self.step, self.of, stopped=True, notes=self.notes)
        return self if self.stopped or self.refused else RunStatus.refusal(reason)


def stopped_note(step, total) -> str:
    """What a stopped run's status says."""
    return (f"**Stopped at step {step} of {total}.** The pictures are unfinished: each is the model's guess of the "
            "final image at that step, still noisy. Nothing was saved.")


NOTHING_RAN = RunStatus.refusal("")


def said(outcome) -> tuple[RunStatus, RunStatus]:
    """A failed event's status and the outcome kept after it (wiring.Call.on): a refusal says why (its reason, which
    the corner says too); a run Gradio cancelled says where it stopped (the last step it showed), so it does not
    look hung; a run that said it stopped keeps saying so; a run cancelled in the queue says nothing ran. Sending the
    status again also clears the "Error" mark Gradio leaves on it. A refusal's reason is said once: what fails next
    (a queued run Stop cancels) does not repeat it."""
    shown = outcome.failed("") if isinstance(outcome, RunStatus) else NOTHING_RAN
    return shown, NOTHING_RAN if shown.refused else shown


def cleared(outcome):
    """After an event that does not write the status succeeded: a refusal's words go, any other status stays."""
    if isinstance(outcome, RunStatus) and outcome.refused:
        return RunStatus(), None
    return gr.skip(), gr.skip()


def finished(outcome) -> None:
    """The gate before what follows a run (wiring.after_finished): a run that stopped part way made nothing new."""
    if isinstance(outcome, RunStatus) and outcome.stopped:
        raise gr.Error("stopped", visible=False, print_exception=False)
