"""The model tier on Ray Serve: a `Sampler` deployment that holds the U-Net (and the fast mode's student, when the
front loaded one) only, and the front's client for it.

    front (Gradio, CLIP, PNGs, playback)  --SampleRequest-->  Sampler replica  --Progress per step-->  front

A replica is stateless: a request carries everything it needs (conditions, w, seeds, sampler settings), so any
replica serves any request and replicas can come and go. Each request's loop awaits one `@serve.batch` method per
step; requests that are in flight together on a replica share its U-Net forwards from their next step on. The
teacher's and the student's steps are batched apart (`predict`, `predict_fast`): two models never share a forward.

Safe by default: the local Ray instance (`start_local`) runs with its dashboard off, usage statistics off, no Serve
HTTP proxy (the app calls the deployment through a handle only), and its processes on this machine. Joining a
cluster (`connect`) is for a cluster you set up yourself; the README says how to keep its ports off the room's
network.
"""
from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import tempfile
import threading
import time
import uuid
from collections import Counter, deque
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

# Before Ray starts: no usage statistics leave the machine. (Token authentication needs nothing here: Ray 2.60 turns
# it on for a local instance it starts, unless RAY_AUTH_MODE=disabled; a cluster's fronts need its token, README.)
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import ray  # noqa: E402
import torch  # noqa: E402
from ray import serve  # noqa: E402

from ..checkpoints import CONFIG_NAME, WEIGHTS_NAME  # noqa: E402
from ..diffusion import load_diffusion  # noqa: E402
from ..fast import load_fast  # noqa: E402
from ..pipeline import ClipDiffusionPipeline, PreparedRun  # noqa: E402
from ..runtimes import runtime_of, with_runtime  # noqa: E402
from ..sampling import Progress  # noqa: E402
from .options import SamplerOptions  # noqa: E402
from .batching import ModelInput, forward_size, predict_batch  # noqa: E402
from .loop import SampleRequest, sample_async, start_run  # noqa: E402

log = logging.getLogger("clipdiff.serving")

APP_NAME = "clipdiff"
PACKAGE_DIR = Path(__file__).resolve().parents[1]       # clipdiff/, shipped to the replicas with the deployment
RECENT_REQUESTS = 64                                    # finished requests a replica remembers for stats()


@dataclass
class Served:
    """The first item of every stream: who serves it. The front counts replicas by it."""
    replica: str
    request: str
    model_id: str


def checkpoint_files(unet_dir: str | Path) -> dict[str, bytes]:
    """A diffusion checkpoint as bytes: the replicas get the weights with the deployment, not from a path that
    every node would need to have."""
    folder = Path(unet_dir)
    return {name: (folder / name).read_bytes() for name in (CONFIG_NAME, WEIGHTS_NAME)}


def student_files(fast_dir: str | Path | None) -> dict[str, bytes] | None:
    """The fast mode's student as bytes (None: the front has none), sent as the teacher's are."""
    return None if fast_dir is None else checkpoint_files(fast_dir)


def load_sent(files: dict[str, bytes], model_id: str, load):
    """A checkpoint sent with the deployment, loaded by `load` from a temporary folder once its weights hash to the
    id the front named."""
    if not model_id.endswith(weights_digest(files)):
        raise ValueError(f"the weights sent do not hash to {model_id}")
    with tempfile.TemporaryDirectory(prefix="clipdiff-sampler-") as tmp:
        for name, data in files.items():
            (Path(tmp) / name).write_bytes(data)
        return load(Path(tmp), "cpu")


def weights_digest(files: dict[str, bytes]) -> str:
    return hashlib.sha256(files[WEIGHTS_NAME]).hexdigest()[:10]


@serve.deployment(name="Sampler", max_ongoing_requests=16, graceful_shutdown_timeout_s=5)
class Sampler:
    """The U-Net (and the fast mode's student, when sent) and a per-step batcher for each. `sample` streams one
    request's Progress; `describe` and `stats` answer the front and the tests."""

    def __init__(self, files: dict[str, bytes], model_id: str, threads: int, max_batch_size: int,
                 batch_wait_s: float, loopback: bool = False, runtime: str = "torch", precision: str = "fp32",
                 fast_files: dict[str, bytes] | None = None, student_id: str | None = None):
        if loopback:
            serve_grpc_on_loopback()
        torch.set_num_threads(max(1, threads))
        model, self.config = load_sent(files, model_id, load_diffusion)
        self.model = with_runtime(model, runtime, precision)      # the front's runtime (clipdiff.runtimes)
        self.model_id = model_id
        self.student = self.student_config = self.student_id = None
        if fast_files is not None:
            student, self.student_config = load_sent(fast_files, student_id, load_fast)
            if self.student_config.teacher != model_id:
                raise ValueError(f"the student {student_id} was distilled from {self.student_config.teacher}, "
                                 f"not from {model_id}")
            self.student = with_runtime(student, runtime, precision)   # on the teacher's runtime, as the front
            self.student_id = student_id
        for method in (self.predict, self.predict_fast):
            method.set_max_batch_size(max_batch_size)
            method.set_batch_wait_timeout_s(batch_wait_s)
        try:
            self.replica = serve.get_replica_context().replica_id.unique_id
        except Exception:   # noqa: BLE001 (outside Serve, as in a direct test)
            self.replica = uuid.uuid4().hex[:8]
        self.counts = Counter()                       # requests, done, cancelled, failed, steps, forwards, samples
        self.batch_requests = Counter()               # requests per forward -> how many forwards
        self.active: dict[str, int] = {}              # request -> steps done
        self.recent: deque[dict] = deque(maxlen=RECENT_REQUESTS)
        self.forward_s = 0.0                          # wall time inside U-Net forwards (with the thread hop)

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.01)
    async def predict(self, inputs: list[ModelInput]) -> list[torch.Tensor]:
        """One teacher forward for every request that asked within the batch wait (set in __init__)."""
        return await self._forward(self.model, inputs)

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.01)
    async def predict_fast(self, inputs: list[ModelInput]) -> list[torch.Tensor]:
        """One student forward for every fast request that asked within the batch wait: the student's condition
        rows are one wider than the teacher's, and it is another model, so its questions are batched apart."""
        self.counts["student_forwards"] += 1
        return await self._forward(self.student, inputs)

    async def _forward(self, model, inputs: list[ModelInput]) -> list[torch.Tensor]:
        self.counts["forwards"] += 1
        self.counts["samples"] += forward_size(inputs)
        self.batch_requests[len(inputs)] += 1
        started = time.perf_counter()
        # In a worker thread: the replica's event loop keeps streaming the other requests' previews meanwhile.
        eps = await asyncio.to_thread(predict_batch, model, inputs)
        self.forward_s += time.perf_counter() - started
        return eps

    async def sample(self, request: SampleRequest):
        """Served(...), then one Progress per step. Cancelled (the front's Stop), it stops at its next await."""
        rid = uuid.uuid4().hex[:12]
        problems = request.problems(self.model.cond_dim, self.student_config)
        if request.model_id is not None and request.model_id != self.model_id:
            problems.append(f"this replica serves {self.model_id}, not {request.model_id}")
        if request.student_id is not None and request.student_id != self.student_id:
            problems.append(f"this replica's fast-mode student is {self.student_id}, not {request.student_id}")
        if problems:
            raise ValueError("; ".join(problems))
        run, answering = start_run(self.model, request, self.config.schedule, self.student, self.student_config)
        predict = self.predict if answering is self.model else self.predict_fast
        self.counts["requests"] += 1
        self.active[rid] = 0
        outcome = "failed"
        started = time.perf_counter()
        try:
            yield Served(self.replica, rid, self.model_id)
            async for progress in sample_async(run, predict):
                self.active[rid] += 1
                self.counts["steps"] += 1
                yield progress
            outcome = "done"
        except (asyncio.CancelledError, GeneratorExit):
            outcome = "cancelled"
            raise
        finally:
            self.counts[outcome] += 1
            self.recent.append({"request": rid, "steps": self.active.pop(rid), "total": run.total,
                                "images": len(request.seeds), "outcome": outcome,
                                "seconds": round(time.perf_counter() - started, 4)})

    def describe(self) -> dict:
        return {"replica": self.replica, "model_id": self.model_id, "schedule": self.config.schedule.to_dict(),
                "cond_dim": self.model.cond_dim, "image_size": self.config.unet.image_size,
                "student_id": self.student_id}

    def stats(self) -> dict:
        return {"replica": self.replica, "counts": dict(self.counts), "batch_requests": dict(self.batch_requests),
                "forward_s": round(self.forward_s, 4), "active": dict(self.active), "recent": list(self.recent)}


def serve_grpc_on_loopback() -> None:
    """Ray Serve 2.60 starts an inter-deployment gRPC server in every replica on [::]:0, all interfaces, whatever
    the node's address (ray/serve/_private/replica.py, after the user's __init__; token authentication guards it).
    On a local instance nothing beyond this machine needs it: bind it to 127.0.0.1. Runs in the replica process."""
    from ray.serve._private import replica as replica_module

    bind = getattr(replica_module, "add_port_to_grpc_server", None)
    if bind is None or getattr(bind, "clipdiff_loopback", False):
        return

    def loopback(server, address):
        return bind(server, "127.0.0.1:0" if address == "[::]:0" else address)

    loopback.clipdiff_loopback = True
    replica_module.add_port_to_grpc_server = loopback


class RaySamplerBackend:
    """The app's backend on a Sampler deployment, through a streaming handle."""
    name = "ray"

    def __init__(self, handle, options: SamplerOptions, owns_cluster: bool, address: str | None = None):
        self.handle = handle
        self.stream_handle = handle.options(stream=True)
        self.options = options
        self.owns_cluster = owns_cluster
        self.address = address
        self.served_by: Counter = Counter()           # replica -> requests it streamed to this front
        self._lock = threading.Lock()                 # Gradio runs handlers (and so streams) in many threads

    def check(self, pipe: ClipDiffusionPipeline) -> None:
        """The deployment must serve the front's own weights and schedule, or its PNGs would lie about them; a front
        with the fast mode, its own student too (a front without one takes any: it never asks for the student)."""
        info = self.handle.describe.remote().result()
        if info["model_id"] != pipe.model_id or info["schedule"] != pipe.config.schedule.to_dict():
            raise RuntimeError(f"the Sampler deployment serves {info['model_id']} ({info['schedule']}), but this app "
                               f"loaded {pipe.model_id} ({pipe.config.schedule.to_dict()}); deploy the same --unet")
        served = info.get("student_id")       # a deployment from before the fast mode says nothing: none
        if pipe.student_id is not None and served != pipe.student_id:
            raise RuntimeError(f"the Sampler deployment serves {'no fast-mode student' if served is None else served}"
                               f", but this app loaded the fast mode's {pipe.student_id}; start every front of the "
                               "deployment with the same --fast (or this one without it)")

    def run(self, pipe: ClipDiffusionPipeline, run: PreparedRun, record_every: int = 0) -> Iterator[Progress]:
        return self.stream(SampleRequest.of(run.inputs, record_every, pipe.model_id, pipe.student_id))

    def stream(self, request: SampleRequest) -> Iterator[Progress]:
        """The replica's Progress events. Closing this generator (Gradio's Stop) cancels the response: the replica
        stops at its next step; the front stops waiting at once."""
        response = self.stream_handle.sample.remote(request)
        finished = False
        try:
            for item in response:
                if isinstance(item, Served):
                    with self._lock:
                        self.served_by[item.replica] += 1
                    continue
                yield item
            finished = True
        finally:
            if not finished:
                response.cancel()

    def stats(self) -> list[dict]:
        """Every replica's counters (a broadcast: for tests and the room report, not for each request)."""
        return self.handle.broadcast("stats").results(timeout_s=30)

    def describe(self) -> dict:
        return {"backend": self.name, "replicas": self.options.replicas, "max_batch_size": self.options.max_batch_size,
                "batch_wait_s": self.options.batch_wait_s, "address": self.address or "local",
                "served_by": self.served()}

    def served(self) -> dict[str, int]:
        with self._lock:
            return dict(self.served_by)

    def close(self) -> None:
        """Leave the cluster; a local one (ours) goes down with its replicas, a joined one keeps serving others."""
        ray.shutdown()      # ours: its processes (Serve's controller and replicas included) end with it


def runtime_env(threads: int) -> dict:
    """What every Ray worker of the app's job gets: clipdiff itself (the cluster need not have it installed, only
    its requirements), no usage statistics, and torch threads matching the replica's CPUs."""
    return {"py_modules": [str(PACKAGE_DIR)],
            "env_vars": {"RAY_USAGE_STATS_ENABLED": "0", "OMP_NUM_THREADS": str(threads),
                         "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1"}}


def threads_for(options: SamplerOptions) -> int:
    return max(1, int(options.replica_cpus))


def loopback_only() -> None:
    """Keep a local Ray instance on 127.0.0.1: Ray binds its servers (GCS, raylet, workers, agents) to the node's
    address, which it takes from the network unless multi-node clusters are off (the switch Ray reads for
    Windows and macOS). Set for this process (already imported: the constant) and for Ray's child processes."""
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    from ray._private import ray_constants

    ray_constants.ENABLE_RAY_CLUSTER = False


def start_local(pipe: ClipDiffusionPipeline, unet_dir: str | Path, options: SamplerOptions,
                num_cpus: int | None = None, object_store_mb: int = 200,
                fast_dir: str | Path | None = None) -> RaySamplerBackend:
    """A Ray instance of our own on this machine (on 127.0.0.1 only, dashboard off, no HTTP proxy), and the Sampler
    deployed on it (with the fast mode's student from fast_dir, the folder pipe's student came from, if any)."""
    loopback_only()
    ray.init(num_cpus=num_cpus or max(1, int(round(options.replicas * options.replica_cpus))),
             _node_ip_address="127.0.0.1", include_dashboard=False, object_store_memory=object_store_mb * 2**20,
             runtime_env=runtime_env(threads_for(options)), configure_logging=True, logging_level=logging.WARNING,
             namespace=APP_NAME)
    return _deploy(pipe, unet_dir, options, owns_cluster=True, loopback=True, fast_dir=fast_dir)


def connect(pipe: ClipDiffusionPipeline, unet_dir: str | Path, options: SamplerOptions,
            address: str, fast_dir: str | Path | None = None) -> RaySamplerBackend:
    """Join a cluster (ray start --head ...): use its Sampler deployment when it serves our weights (and our
    student, with the fast mode; another is refused in words), else deploy it with `options` (and the student from
    fast_dir). Several fronts started with the same --ray-address share one deployment. A front on a machine of the
    cluster joins through its local node (`ray start --address HEAD` there, then --ray-address auto); a
    cluster on this machine's loopback (deploy/room.sh) is joined as 127.0.0.1."""
    if address.split(":")[0] in ("127.0.0.1", "localhost"):
        loopback_only()
    ray.init(address=address, runtime_env=runtime_env(threads_for(options)), namespace=APP_NAME,
             logging_level=logging.WARNING)
    try:
        handle = serve.get_app_handle(APP_NAME)
    except Exception:   # noqa: BLE001 (Serve not started, or no such app: deploy it)
        return _deploy(pipe, unet_dir, options, owns_cluster=False, address=address, fast_dir=fast_dir)
    backend = RaySamplerBackend(handle, options, owns_cluster=False, address=address)
    try:
        backend.check(pipe)
    except RuntimeError:
        ray.shutdown()
        raise
    running = serve.status().applications[APP_NAME].deployments["Sampler"].replica_states.get("RUNNING", 0)
    backend.options.replicas = running
    return backend


def _deploy(pipe: ClipDiffusionPipeline, unet_dir: str | Path, options: SamplerOptions, owns_cluster: bool,
            address: str | None = None, loopback: bool = False,
            fast_dir: str | Path | None = None) -> RaySamplerBackend:
    if (fast_dir is None) != (pipe.student_id is None):
        raise ValueError("fast_dir is the folder of the pipeline's own student: both or neither")
    serve.start(proxy_location="Disabled", logging_config={"log_level": "WARNING", "enable_access_log": False})
    threads = threads_for(options)
    app = Sampler.options(
        num_replicas=options.replicas,
        max_ongoing_requests=options.max_batch_size * 2,
        ray_actor_options={"num_cpus": options.replica_cpus},
    ).bind(checkpoint_files(unet_dir), pipe.model_id, threads, options.max_batch_size, options.batch_wait_s, loopback,
           runtime_of(pipe.model).name, runtime_of(pipe.model).precision, student_files(fast_dir), pipe.student_id)
    handle = serve.run(app, name=APP_NAME, route_prefix=None,
                       logging_config={"log_level": "WARNING", "enable_access_log": False})
    backend = RaySamplerBackend(handle, options, owns_cluster=owns_cluster, address=address)
    backend.check(pipe)
    return backend
