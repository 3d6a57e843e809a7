"""What the app runs a job list through. The front keeps everything but the U-Net's steps: CLIP encoding, PNG
writing, previews, playback frames. A backend turns a prepared run (ClipDiffusionPipeline.prepare) into the same
stream of Progress events that ClipDiffusionPipeline.sample yields, so the app's handlers do not know where the steps ran.

    local  the steps run in this process, batched across users: the runs in flight (up to --concurrency) share one
           model thread's U-Net forwards (batching.StepBatcher)
    ray    the steps run on a Ray Serve deployment of Sampler replicas (ray_sampler.py), batched across users; the
           replicas hold the fast mode's student too when the front loaded one

Cancelling is closing the iterator (Gradio does so when Stop is pressed): the local sampler stops between two
steps; the ray backend cancels its response stream and the replica stops at its next step.
"""
from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Protocol

from .options import SamplerOptions

if TYPE_CHECKING:   # named in annotations only: app.py reads the flags' types before loading torch and diffusers
    from ..pipeline import ClipDiffusionPipeline, PreparedRun
    from ..sampling import Progress
    from .batching import StepBatcher

BACKENDS = ("local", "ray")
SERVE_REQUIREMENTS = "requirements-serve.txt"


class Backend(Protocol):
    name: str

    def run(self, pipe: ClipDiffusionPipeline, run: PreparedRun, record_every: int = 0) -> Iterator[Progress]:
        """Sample a prepared run's jobs together; yields after each step, the last Progress carries the images."""
        ...

    def describe(self) -> dict:
        """What the status line and the room measurement report: backend, replicas, ..."""
        ...

    def close(self) -> None:
        ...


class LocalBackend:
    """In this process, on the pipeline's own U-Net: each run's sampler in its caller's thread, the U-Net forwards of
    all runs in flight shared through one StepBatcher per model (the pictures are pipe.sample's, see batching.py)."""
    name = "local"

    def __init__(self, max_rows: int | None = None, batch_wait_s: float | None = None):
        self.max_rows, self.batch_wait_s = max_rows, batch_wait_s     # None: batching.py's defaults
        self._batchers: dict[int, StepBatcher] = {}
        self._lock = threading.Lock()

    def run(self, pipe: ClipDiffusionPipeline, run: PreparedRun, record_every: int = 0) -> Iterator[Progress]:
        stepper, model = pipe.stepper(run.inputs, record_every)     # the teacher's guided run, or the student's
        return self.batcher(model).drive(stepper)

    def batcher(self, model) -> StepBatcher:
        """The model's batcher: every run on the same U-Net shares it."""
        from .batching import BATCH_WAIT_S, MAX_FORWARD_ROWS, StepBatcher

        with self._lock:
            found = self._batchers.get(id(model))
            if found is None or found.model is not model:
                found = self._batchers[id(model)] = StepBatcher(
                    model, MAX_FORWARD_ROWS if self.max_rows is None else self.max_rows,
                    BATCH_WAIT_S if self.batch_wait_s is None else self.batch_wait_s)
            return found

    def stats(self) -> dict:
        """What the batchers did: forwards, questions (run steps) and rows, and how many runs shared each forward."""
        with self._lock:
            batchers = list(self._batchers.values())
        counts, shared = {}, {}
        for b in batchers:
            for key, value in b.counts.items():
                counts[key] = counts.get(key, 0) + value
            for key, value in b.runs_per_forward.items():
                shared[key] = shared.get(key, 0) + value
        return {"counts": counts, "runs_per_forward": dict(sorted(shared.items()))}

    def describe(self) -> dict:
        return {"backend": self.name, "replicas": 1}

    def close(self) -> None:
        with self._lock:
            batchers, self._batchers = list(self._batchers.values()), {}
        for b in batchers:
            b.close()


def make_backend(kind: str, pipe: ClipDiffusionPipeline | None = None, unet_dir: str | Path | None = None,
                 options: SamplerOptions | None = None, address: str | None = None,
                 fast_dir: str | Path | None = None) -> Backend:
    """The backend app.py's flags ask for. `ray` starts a local Ray instance on 127.0.0.1 with the Sampler
    deployed on it (with the fast mode's student from fast_dir, the folder pipe's student came from), or joins the
    cluster at `address`; it needs Ray (requirements-serve.txt), the plain app does not."""
    if kind == "local":
        return LocalBackend()
    if kind != "ray":
        raise ValueError(f"unknown backend {kind!r}; choose one of {BACKENDS}")
    try:
        from . import ray_sampler
    except ImportError as e:
        raise RuntimeError(f"--backend ray needs Ray Serve: pip install -r {SERVE_REQUIREMENTS} ({e})") from None
    options = options or SamplerOptions()
    if address:
        return ray_sampler.connect(pipe, unet_dir, options, address, fast_dir=fast_dir)
    return ray_sampler.start_local(pipe, unet_dir, options, fast_dir=fast_dir)
