"""What the app runs a job list through. The front keeps everything but the U-Net's steps: CLIP encoding, PNG
writing, previews, playback frames. A backend turns a prepared run (ClipDiffusionPipeline.prepare) into the same
stream of Progress events that ClipDiffusionPipeline.sample yields, so the app's handlers do not know where the steps ran.

    local  the steps run in this process (pipeline.sample); one sampling worker per --concurrency
    ray    the steps run on a Ray Serve deployment of Sampler replicas (ray_sampler.py), batched across users

Cancelling is closing the iterator (Gradio does so when Stop is pressed): the local sampler stops between two
steps; the ray backend cancels its response stream and the replica stops at its next step.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Protocol

from .options import SamplerOptions

if TYPE_CHECKING:   # named in annotations only: app.py reads the flags' types before loading torch and diffusers
    from ..pipeline import ClipDiffusionPipeline, PreparedRun
    from ..sampling import Progress

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
    """In this process, on the pipeline's own U-Net."""
    name = "local"

    def run(self, pipe: ClipDiffusionPipeline, run: PreparedRun, record_every: int = 0) -> Iterator[Progress]:
        return pipe.sample(run, record_every)

    def describe(self) -> dict:
        return {"backend": self.name, "replicas": 1}

    def close(self) -> None:
        pass


def make_backend(kind: str, pipe: ClipDiffusionPipeline | None = None, unet_dir: str | Path | None = None,
                 options: SamplerOptions | None = None, address: str | None = None) -> Backend:
    """The backend app.py's flags ask for. `ray` starts a local Ray instance on 127.0.0.1 with the Sampler
    deployed on it, or joins the cluster at `address`; it needs Ray (requirements-serve.txt), the plain app does
    not."""
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
        return ray_sampler.connect(pipe, unet_dir, options, address)
    return ray_sampler.start_local(pipe, unet_dir, options)
