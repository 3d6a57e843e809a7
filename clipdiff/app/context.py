"""What every handler gets first (`ctx`): the models the app serves, the folder its files go to, how it runs."""
from __future__ import annotations

import atexit
import logging
import re
import shutil
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path

import gradio as gr

from ..atlas import Atlas
from ..checkpoints import DEFAULT_ATLAS_DIR, DEFAULT_UNET_DIR, CheckpointError
from ..diffusion import load_diffusion
from ..encoders import ClipEncoder, ClipWeightsMissing
from ..pipeline import ClipDiffusionPipeline, model_id_of
from ..runtimes import with_runtime
from ..schedulers import SAMPLERS, STUDENT_SAMPLERS
from ..serving.backend import Backend, LocalBackend
from ..serving.fairness import InFlight
from ..vocabulary import DEFAULT_VOCABULARY, Vocabulary
from ..wall import Wall
from .limits import LIGHT_CONCURRENCY, MODEL_CONCURRENCY, OUTPUT_MAX_AGE_S, PREVIEW_EVERY_S, SESSION_TTL_S

TRAIN_HINT = "get the shipped models with `python -m clipdiff train-default`"
log = logging.getLogger("clipdiff.app")
SAFE_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,99}")
LIGHT_GROUP = {"concurrency_id": "light", "concurrency_limit": LIGHT_CONCURRENCY}


@dataclass
class Models:
    """What the app serves. Each part may be missing; `problems` says what and how to get it, in words."""
    encoder: ClipEncoder | None = None
    pipeline: ClipDiffusionPipeline | None = None
    atlas: Atlas | None = None
    problems: list[str] = field(default_factory=list)
    backend: Backend = field(default_factory=LocalBackend)   # where the sampler steps run (app.py --backend)
    vocabulary: Vocabulary | None = None    # the training captions' words: the token view marks the rest

    @classmethod
    def load(cls, unet: str | Path = DEFAULT_UNET_DIR, clip: str = "default", clip_pretrained: str | None = None,
             atlas: str | Path | None = DEFAULT_ATLAS_DIR, device: str = "auto",
             vocabulary: str | Path | None = DEFAULT_VOCABULARY, runtime: str | None = None,
             precision: str = "fp32", fast: str | Path | None = None) -> "Models":
        """fast: the fast mode's student folder (app.py --fast; None: off, the teaching default)."""
        models = cls()
        if vocabulary is not None:
            try:
                models.vocabulary = Vocabulary.load(vocabulary)
            except (OSError, ValueError, KeyError) as e:   # optional: the token view just marks no words
                log.warning("no vocabulary of the training captions (%s): %s", vocabulary, e)
        try:
            models.encoder = ClipEncoder.load(clip, clip_pretrained, device)
        except (ClipWeightsMissing, CheckpointError, OSError, ValueError, RuntimeError) as e:
            models.problems.append(problem("CLIP model", e, "--clip DIR"))
        if models.encoder is not None:
            try:
                model, config = load_diffusion(Path(unet), models.encoder.device)
                model = with_runtime(model, runtime, precision)
                models.pipeline = ClipDiffusionPipeline(models.encoder, model, config, model_id_of(Path(unet)))
            except (CheckpointError, OSError, ValueError, RuntimeError) as e:
                models.problems.append(problem("diffusion model", e, "--unet DIR"))
        if models.pipeline is not None and fast is not None:
            try:
                models.pipeline.with_student(fast, runtime, precision)
            except (CheckpointError, OSError, ValueError, RuntimeError) as e:
                # Asked for and missing: the app runs without it, says so at the top, and a fast run is refused
                # with this same sentence.
                models.problems.append(problem("fast mode", e, "--fast DIR"))
                models.pipeline.student_problem = models.problems[-1]
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

    @property
    def samplers(self) -> tuple[str, ...]:
        """What the sampler controls offer: the teacher's samplers, and the fast mode's where its student loaded."""
        if self.pipeline is not None and self.pipeline.student is not None:
            return SAMPLERS + STUDENT_SAMPLERS
        return SAMPLERS

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
            if self.pipeline.student is not None:
                parts.append(f"fast mode `{self.pipeline.student_id}` (sampler `{STUDENT_SAMPLERS[0]}`)")
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


class OutputFolder:
    """PNGs and GIFs for the browser, pruned after an hour. Each file is alone in a folder with a random id, so its
    own name can say what it shows (what a download is called: `a-deep-red-rose_w2_seed7.png`); that name is made
    only of lower-case ASCII letters, digits, '-', '_' and '.' (runs.file_name), never the user's text as sent."""

    def __init__(self):
        self.folder = Path(tempfile.mkdtemp(prefix="clipdiff-app-"))
        self._last_prune = 0.0
        atexit.register(shutil.rmtree, self.folder, ignore_errors=True)

    def path(self, suffix: str, name: str | None = None) -> Path:
        """A new file's path; name: its descriptive stem (already made safe), or none for a random one."""
        self._prune()
        if not name:
            return self.folder / f"{uuid.uuid4().hex}{suffix}"
        if not SAFE_NAME.fullmatch(name):
            raise ValueError(f"unsafe output file name {name!r}")
        folder = self.folder / uuid.uuid4().hex
        folder.mkdir()
        return folder / f"{name}{suffix}"

    def _prune(self) -> None:
        now = time.time()
        if now - self._last_prune < 60:
            return
        self._last_prune = now
        for f in self.folder.iterdir():
            try:
                if now - f.stat().st_mtime > OUTPUT_MAX_AGE_S:
                    shutil.rmtree(f) if f.is_dir() else f.unlink()
            except OSError:
                pass


# A preview is a picture Gradio writes to its cache and streams (6.5 ms of CPU for a 4-image one here, besides its
# event): at 30 attendees on one 2-core machine ~37 went out a second, the CPU of about a fifth of the machine.
PREVIEW_SHARE = 2


@dataclass
class Context:
    """The app as its handlers see it. preview_every_s: at most one streamed preview this often while sampling
    (0: after every step); session_ttl_s: how long a session keeps its last run; wall: the room's wall (app.py
    --wall; None: off)."""
    models: Models
    outputs: OutputFolder
    concurrency: int = MODEL_CONCURRENCY
    preview_every_s: float = PREVIEW_EVERY_S
    session_ttl_s: float = SESSION_TTL_S
    in_flight: InFlight = field(default_factory=InFlight)   # one sampling run per browser session at a time
    stop: threading.Event | None = None    # a run's own: Stop sets it (errors.one_per_session hands it to the run)
    wall: Wall | None = None

    def for_run(self, stop: threading.Event) -> "Context":
        """This context as one run sees it: with the run's stop event."""
        return replace(self, stop=stop)

    def preview_interval(self) -> float:
        """How often a run starting now previews: every preview_every_s alone; runs in flight together share the
        previews of PREVIEW_SHARE lone runs, so a full room's previews cost the front what two lone runs' do."""
        return self.preview_every_s * max(1.0, len(self.in_flight) / PREVIEW_SHARE)

    @classmethod
    def create(cls, models: Models, concurrency: int = MODEL_CONCURRENCY, preview_every_s: float = PREVIEW_EVERY_S,
               session_ttl_s: float = SESSION_TTL_S, wall: Wall | None = None) -> "Context":
        return cls(models, OutputFolder(), concurrency, preview_every_s, session_ttl_s, wall=wall)

    @property
    def model_group(self) -> dict:
        """Anything that runs a model waits in one queue group, `concurrency` runs at once."""
        return {"concurrency_id": "model", "concurrency_limit": self.concurrency}
