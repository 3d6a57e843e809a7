"""What the app runs a job list through. The front keeps everything but the U-Net's steps: CLIP encoding, PNG
writing, previews, playback frames. A backend turns (pipeline, jobs, sampler settings) into the same stream of
Progress events that ClipDiffusionPipeline.run yields, so the app's handlers do not know where the steps ran.

    local  the steps run in this process (today's pipeline.run); one sampling worker per --concurrency
    ray    the steps run on a Ray Serve deployment of Sampler replicas (ray_sampler.py), batched across users

Cancelling is closing the iterator (Gradio does so when Stop is pressed): the local sampler stops between two
steps; the ray backend cancels its response stream and the replica stops at its next step.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Protocol

if TYPE_CHECKING:   # named in annotations only: app.py reads the flags' types before loading torch and diffusers
    from ..pipeline import ClipDiffusionPipeline, Job
    from ..sampling import Progress

BACKENDS = ("local", "ray")
SERVE_REQUIREMENTS = "requirements-serve.txt"


@dataclass
class SamplerOptions:
    """How the deployment runs. Every field is an app.py flag."""
    replicas: int = 2
    replica_cpus: float = 1.0             # Ray CPUs per replica; also its torch threads (at least 1)
    max_batch_size: int = 8               # requests per U-Net forward (each one 2 x its images)
    batch_wait_s: float = 0.01            # how long a step waits for batch mates when the batch is not full

    def problems(self) -> list[str]:
        found = []
        if self.replicas < 1:
            found.append("replicas must be at least 1")
        if self.replica_cpus <= 0:
            found.append("replica CPUs must be positive")
        if self.max_batch_size < 1:
            found.append("the batch size must be at least 1")
        if not 0 <= self.batch_wait_s <= 1:
            found.append("the batch wait must be 0 to 1 s")
        return found


class Backend(Protocol):
    name: str

    def run(self, pipe: ClipDiffusionPipeline, jobs: list[Job], steps: int, sampler: str,
            record_every: int = 0) -> Iterator[Progress]:
        """Sample every job together; yields after each step, the last Progress carries the images."""
        ...

    def describe(self) -> dict:
        """What the status line and the room measurement report: backend, replicas, ..."""
        ...

    def close(self) -> None:
        ...


class LocalBackend:
    """In this process, on the pipeline's own U-Net."""
    name = "local"

    def run(self, pipe: ClipDiffusionPipeline, jobs: list[Job], steps: int, sampler: str,
            record_every: int = 0) -> Iterator[Progress]:
        return pipe.run(jobs, steps=steps, sampler=sampler, record_every=record_every)

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
