"""Serving a room: batching across requests, the served sampling loop, backends, one run per session,
the room measurement; and, marked slow, the same through a local Ray cluster (2 CPUs, 2 replicas).

The fast tier needs no Ray. The slow tier (`pytest -m slow tests/test_serve.py`) skips with a reason when Ray is
not installed (`pip install -r requirements-serve.txt`).

Tolerance, wherever a sample made beside others is compared with the same sample made alone: 1e-3 on the float
image in [-1, 1], and at most one level of the uint8 PNG. Why not bitwise: a sample's prediction depends only on its
own rows of the U-Net's input (group norm and attention work within a sample), but the CPU kernels that compute
them (oneDNN convolutions, GEMMs) block and order their sums by the batch size, so the last float bits differ;
over a run's steps (and DDIM's clipping) that grows to ~1e-4 (test_sampling measured up to ~4e-4). A pixel whose
value lies near a rounding boundary can then land one uint8 level away, which no eye sees. A request alone is
bit-identical to the local sampler when the kernels are the same (the injected-predictor test below); a replica
that runs with another number of torch threads than the front (1 per replica CPU) moves the last bits the same way.
"""
from __future__ import annotations

import asyncio
import dataclasses
import importlib.util
import json
import os
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from clipdiff.app.limits import MODEL_CONCURRENCY
from clipdiff.pipeline import Job, images_per_prompt
from clipdiff.sampling import run_to_end, sample_guided, to_uint8
from clipdiff.schedulers import SAMPLERS
from clipdiff.serving.backend import LocalBackend, make_backend
from clipdiff.serving.batching import StepBatcher, predict_batch
from clipdiff.serving.fairness import AlreadyRunning, InFlight
from clipdiff.serving.loop import SampleRequest, sample_async, start_run
from clipdiff.serving.options import SamplerOptions
from clipdiff.unet import ConditionalUNet

from clipdiff.testing import tiny_unet_config
from clipdiff.testing.live import app_in_this_process, free_port

ATOL = 1e-3          # float images in [-1, 1]; see the module docstring
MAX_LEVELS = 1       # uint8 PNG levels
PROMPT = "A deep red rose flower"
REPO_ROOT = Path(__file__).resolve().parents[1]


def assert_same_picture(a: torch.Tensor, b: torch.Tensor) -> None:
    assert a.shape == b.shape
    assert torch.allclose(a, b, atol=ATOL), f"max difference {float((a - b).abs().max()):.2e}"
    assert np.abs(to_uint8(a).astype(int) - to_uint8(b).astype(int)).max() <= MAX_LEVELS


@pytest.fixture(scope="module")
def model() -> ConditionalUNet:
    torch.manual_seed(0)
    m = ConditionalUNet(tiny_unet_config(32))
    with torch.no_grad():
        m.null_embedding.normal_()     # random, so conditional and unconditional differ
    return m.eval()


def conditions(n: int, seed: int) -> torch.Tensor:
    return torch.randn(n, 32, generator=torch.Generator().manual_seed(seed)) * 2


# -- batching across requests ------------------------------------------------------------------------------------
def test_one_batched_forward_equals_each_requests_own_forward(model):
    """Three requests of different sizes, at different timesteps, answered by one forward."""
    inputs = []
    for k, (n, t) in enumerate([(2, 399), (1, 57), (3, 200)]):
        x = torch.randn(2 * n, 3, 16, 16, generator=torch.Generator().manual_seed(k))
        inputs.append((x, torch.tensor(t).expand(2 * n), conditions(2 * n, 10 + k)))
    together = predict_batch(model, inputs)
    with torch.inference_mode():
        alone = [model(x, t, c) for x, t, c in inputs]
    assert [o.shape for o in together] == [a.shape for a in alone] == [(4, 3, 16, 16), (2, 3, 16, 16), (6, 3, 16, 16)]
    for o, a in zip(together, alone):
        assert torch.allclose(o, a, atol=1e-5), "batch mates changed a request's prediction"
    # the checks above could fail: swapping two requests' outputs is caught
    assert not torch.allclose(together[0][:2], alone[1], atol=1e-2)
    # one request alone in a "batch" is the plain forward, bit for bit
    assert torch.equal(predict_batch(model, inputs[1:2])[0], alone[1])


# -- the served loop ---------------------------------------------------------------------------------------------
def request(n: int, seed: int, sampler: str, steps: int, record_every: int = 0) -> SampleRequest:
    return SampleRequest(cond=conditions(n, seed), w=[2.0, -0.5, 0.0, 1.0][:n], seeds=[seed + i for i in range(n)],
                         steps=steps, sampler=sampler, record_every=record_every)


def local_result(model, r: SampleRequest):
    return run_to_end(sample_guided(model, r.cond, torch.tensor(r.w), r.seeds, sampler=r.sampler, steps=r.steps,
                                    record_every=r.record_every))


async def collect(model, r: SampleRequest, predict) -> list:
    return [p async for p in sample_async(start_run(model, r, None)[0], predict)]


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_served_loop_with_an_injected_predictor_equals_the_local_sampler(model, sampler):
    """The replica's loop, its predictor awaited once per step, makes the local sampler's pictures bit for bit."""
    r = request(3, 5, sampler, steps=4, record_every=1)
    calls = []

    async def predict(model_input):
        calls.append(model_input[0].shape[0])
        return predict_batch(model, [model_input])[0]

    events = asyncio.run(collect(model, r, predict))
    local = local_result(model, r)
    assert [e.step for e in events] == [1, 2, 3, 4] and calls == [6, 6, 6, 6], "one doubled question per step"
    assert torch.equal(events[-1].images, local.images)
    served_records = [e.record for e in events if e.record is not None]
    assert len(served_records) == len(local.records) == 4
    for a, b in zip(served_records, local.records):
        assert np.array_equal(a.x0, b.x0) and np.array_equal(a.x0_uncond, b.x0_uncond)
        assert np.array_equal(a.guidance, b.guidance)


class LockstepBatcher:
    """A test batcher: answers the questions of every live request with one forward once each has asked (Serve's
    @serve.batch does the same with a size limit and a wait instead of a head count)."""

    def __init__(self, model, live: int):
        self.model, self.live = model, live
        self.pending: list = []
        self.batches: list[int] = []

    async def predict(self, model_input):
        future = asyncio.get_running_loop().create_future()
        self.pending.append((model_input, future))
        self._flush_if_everyone_asked()
        return await future

    def leave(self) -> None:
        self.live -= 1
        self._flush_if_everyone_asked()

    def _flush_if_everyone_asked(self) -> None:
        if self.pending and len(self.pending) == self.live:
            batch, self.pending = self.pending, []
            self.batches.append(len(batch))
            for (_, future), eps in zip(batch, predict_batch(self.model, [q for q, _ in batch])):
                future.set_result(eps)


def test_requests_that_share_forwards_get_the_pictures_they_get_alone(model):
    """Four requests of different sizes, samplers and step counts, each step's questions answered together: every
    picture is the one its request makes alone, within the stated tolerance."""
    requests = [request(2, 1, "ddim", 6), request(1, 2, "dpmsolver-karras", 4), request(3, 3, "ddpm", 6),
                request(1, 4, "dpmsolver", 5)]
    batcher = LockstepBatcher(model, live=len(requests))

    async def one(r):
        try:
            return (await collect(model, r, batcher.predict))[-1].images
        finally:
            batcher.leave()

    async def room():
        return await asyncio.gather(*(one(r) for r in requests))

    together = asyncio.run(room())
    assert batcher.batches[0] == 4 and max(batcher.batches) == 4, "the steps were answered together"
    assert sum(batcher.batches) == sum(r.steps for r in requests) and len(batcher.batches) == 6
    for r, images in zip(requests, together):
        assert_same_picture(images, local_result(model, r).images)


def test_a_cancelled_loop_asks_for_no_step_after_the_cancel(model):
    """Cancelled while its 4th prediction is in flight (Stop at the front), the loop ends there: no 4th Progress,
    no 5th question. The gate makes the timing deterministic."""
    r = request(1, 7, "ddim", steps=10)
    asked, seen = [], []

    async def scenario():
        gate = asyncio.Event()

        async def predict(model_input):
            asked.append(len(asked) + 1)
            if len(asked) == 4:
                await gate.wait()                 # the 4th step's forward is "running" when the cancel comes
            return predict_batch(model, [model_input])[0]

        async def consume():
            async for p in sample_async(start_run(model, r, None)[0], predict):
                seen.append(p.step)

        task = asyncio.create_task(consume())
        while len(asked) < 4:
            await asyncio.sleep(0)
        task.cancel()
        gate.set()                                # the forward completes, as a real one would
        with pytest.raises(asyncio.CancelledError):
            await task
        for _ in range(20):                       # room for a loop that (wrongly) went on to run
            await asyncio.sleep(0)

    asyncio.run(scenario())
    assert seen == [1, 2, 3] and asked == [1, 2, 3, 4]


def test_a_sample_request_says_what_is_wrong_with_it():
    good = request(2, 0, "ddim", 4)
    assert good.problems(32) == []
    bad = dataclasses.replace(good, cond=torch.full((2, 32), float("nan")), seeds=[1], steps=0, sampler="euler",
                              w=[float("inf"), 1.0], record_every=-1)
    found = " | ".join(bad.problems(32))
    for words in ("non-finite", "one w and one seed", "w must be finite", "steps must be", "sampler must be",
                  "record_every"):
        assert words in found, words
    assert "cond must be (N, 16), not (2, 32)" in " ".join(good.problems(16))
    too_many = dataclasses.replace(good, cond=torch.zeros(65, 32), w=[0.0] * 65, seeds=list(range(65)))
    assert "between 1 and 64 images" in " ".join(too_many.problems(32))


# -- the fast mode on the served loop -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def fast_pipeline(tiny_clip_dir, tiny_unet_dir, fast_dir):
    """The tiny pipeline with the fast mode's student, on tiny_pipeline's runtime (the default), as app.py --fast."""
    from clipdiff.pipeline import ClipDiffusionPipeline

    return ClipDiffusionPipeline.load(tiny_unet_dir, clip=str(tiny_clip_dir), device="cpu", fast=fast_dir)


def served_pictures(run, answering) -> torch.Tensor:
    async def predict(model_input):
        return predict_batch(answering, [model_input])[0]

    async def collect_all():
        return [p async for p in sample_async(run, predict)]

    return asyncio.run(collect_all())[-1].images


def test_a_fast_request_is_the_students_run_and_makes_the_local_pictures(fast_pipeline):
    """start_run (what a replica calls) chooses as the local pipeline does: the student for the fast sampler, the
    teacher otherwise; a fast request makes the local fast mode's pictures bit for bit."""
    from clipdiff.fast import FastRun

    pipe = fast_pipeline
    jobs = images_per_prompt(["a red rose", "a white daisy"], 2.0, 11, 2)
    for sampler, expected in (("fast", pipe.student), ("ddim", pipe.model)):
        prepared = pipe.prepare(jobs, 4, sampler)
        r = SampleRequest.of(prepared.inputs, 0, pipe.model_id, pipe.student_id)
        assert r.problems(pipe.model.cond_dim, pipe.student_config) == []
        run, answering = start_run(pipe.model, r, pipe.config.schedule, pipe.student, pipe.student_config)
        assert answering is expected and isinstance(run, FastRun) == (sampler == "fast")
        assert torch.equal(served_pictures(run, answering), run_to_end(pipe.sample(prepared)).images)
    fast = SampleRequest.of(pipe.prepare(jobs, 4, "fast").inputs)
    with pytest.raises(ValueError, match="serves no fast-mode student"):
        start_run(pipe.model, fast, pipe.config.schedule)


def test_a_fast_request_says_what_a_replica_cannot_serve(fast_pipeline):
    pipe = fast_pipeline
    good = dataclasses.replace(request(2, 0, "ddim", 4), sampler="fast", w=[2.0, 0.5])
    assert good.problems(32, pipe.student_config) == []
    assert "serves no fast-mode student" in " ".join(good.problems(32))
    too_long = " ".join(dataclasses.replace(good, steps=9).problems(32, pipe.student_config))
    assert "takes 1 to 8 steps" in too_long
    outside = " ".join(dataclasses.replace(good, w=[2.0, 9.0]).problems(32, pipe.student_config))
    assert "learned w from 0 to 4, not w = 9" in outside
    assert "sampler must be one of" in " ".join(dataclasses.replace(good, sampler="euler").problems(32))


def test_a_replica_without_a_cluster_serves_fast_and_teacher_requests_apart(fast_pipeline, tiny_unet_dir, fast_dir,
                                                                            monkeypatch):
    """The Sampler class itself (no Ray cluster: @serve.batch runs on this event loop): it loads the student sent
    with it, answers a fast and a teacher request in flight together with the local pictures, each model's steps
    through its own batch method, and refuses a request for another student."""
    pytest.importorskip("ray", reason="Ray is not installed: pip install -r requirements-serve.txt")
    from ray import serve

    from clipdiff.runtimes import runtime_of
    from clipdiff.serving.ray_sampler import Sampler, Served, checkpoint_files, student_files

    # Outside a replica Serve has no replica context; @serve.batch (Ray 2.60) reads max_ongoing_requests from it to
    # warn, the Sampler its replica id: a stand-in with those two.
    context = SimpleNamespace(_deployment_config=SimpleNamespace(max_ongoing_requests=16),
                              replica_id=SimpleNamespace(unique_id="replica-in-test"))
    monkeypatch.setattr(serve, "get_replica_context", lambda: context)
    pipe = fast_pipeline
    replica = Sampler.func_or_class(checkpoint_files(tiny_unet_dir), pipe.model_id, 1, 8, 0.01, False,
                                    runtime_of(pipe.model).name, runtime_of(pipe.model).precision,
                                    student_files(fast_dir), pipe.student_id)
    assert replica.describe()["student_id"] == pipe.student_id
    jobs = images_per_prompt(["a red rose", "a white daisy"], 2.0, 11, 2)
    runs = [pipe.prepare(jobs, 4, "fast"), pipe.prepare(jobs, 4, "ddim")]

    async def stream(r):
        return [p async for p in replica.sample(r) if not isinstance(p, Served)]

    async def both():
        return await asyncio.gather(*(stream(SampleRequest.of(run.inputs, 0, pipe.model_id, pipe.student_id))
                                      for run in runs))

    served = asyncio.run(both())
    for events, run in zip(served, runs):
        assert [e.step for e in events] == [1, 2, 3, 4]
        assert_same_picture(events[-1].images, run_to_end(pipe.sample(run)).images)
    assert not torch.allclose(served[0][-1].images, served[1][-1].images, atol=1e-2)
    counts = replica.stats()["counts"]
    assert counts["done"] == 2 and counts["student_forwards"] >= 4 and counts["forwards"] >= 8
    other = dataclasses.replace(SampleRequest.of(runs[0].inputs, 0, pipe.model_id), student_id="fast-0123456789")
    with pytest.raises(ValueError, match="fast-mode student is"):
        asyncio.run(stream(other))


# -- backends ----------------------------------------------------------------------------------------------------
def test_the_local_backend_is_the_pipelines_own_run(tiny_pipeline):
    jobs = images_per_prompt([PROMPT], 2.0, 3, 2)
    via_backend = list(LocalBackend().run(tiny_pipeline, tiny_pipeline.prepare(jobs, 3, "ddim"), record_every=1))
    direct = list(tiny_pipeline.run(jobs, steps=3, sampler="ddim", record_every=1))
    assert [p.step for p in via_backend] == [1, 2, 3]
    assert torch.equal(via_backend[-1].images, direct[-1].images)
    assert LocalBackend().describe() == {"backend": "local", "replicas": 1}


# -- the local backend: per-step batching in this process ----------------------------------------------------------
def rows_per_forward(model, hold_first_until=None) -> tuple[list[int], object]:
    """A forward pre-hook noting each forward's rows; hold_first_until(): the first forward waits until it is true
    (bounded), so the other runs are in flight before it ends."""
    rows = []

    def note(_module, args):
        if not rows and hold_first_until is not None:
            deadline = time.monotonic() + 60
            while not hold_first_until() and time.monotonic() < deadline:
                time.sleep(0.005)
        rows.append(args[0].shape[0])
    return rows, model.register_forward_pre_hook(note)


def drive_in_threads(backend, pipe, runs) -> list[torch.Tensor]:
    """Each prepared run driven through the backend in a thread of its own, as Gradio's handler threads do."""
    results: dict[int, torch.Tensor] = {}

    def one(k, run):
        results[k] = run_to_end(backend.run(pipe, run)).images

    threads = [threading.Thread(target=one, args=(k, r)) for k, r in enumerate(runs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    return [results[k] for k in range(len(runs))]


def test_local_runs_in_flight_share_forwards_and_get_the_pictures_they_get_alone(tiny_pipeline):
    """Three sessions' runs (different sizes, samplers, step counts; a negative prompt, a prompt switch) in flight
    together on the local backend share U-Net forwards, each leaves when done while the others go on, and every
    picture is the one its run makes alone (pipe.sample, unbatched) within 1 uint8 level."""
    pipe = tiny_pipeline
    runs = [pipe.prepare(images_per_prompt([PROMPT], 2.0, 1, 2), 6, "ddim"),
            pipe.prepare(images_per_prompt(["A white daisy"], 1.0, 5, 1, negative="red"), 4, "dpmsolver-karras"),
            pipe.prepare(images_per_prompt(["[A rose:A daisy:0.5]"], 3.0, 9, 3), 5, "ddpm")]
    alone = [run_to_end(pipe.sample(r)).images for r in runs]
    backend = LocalBackend(batch_wait_s=30)     # a forward waits for every run in flight: the sharing is exact
    batcher = backend.batcher(pipe.model)
    rows, hook = rows_per_forward(pipe.model, hold_first_until=lambda: batcher.in_flight() == len(runs))
    try:
        together = drive_in_threads(backend, pipe, runs)
    finally:
        hook.remove()
        backend.close()
    for a, b in zip(together, alone):
        assert_same_picture(a, b)
    steps = sum(r.steps for r in runs)
    assert batcher.counts["questions"] == steps and sum(rows) == 2 * sum(len(r.jobs) * r.steps for r in runs)
    assert max(batcher.runs_per_forward) == 3 and len(rows) < steps, "the runs shared forwards"
    assert batcher.in_flight() == 0


def test_a_run_that_stops_leaves_the_batch_at_once_and_the_others_finish(tiny_pipeline):
    """Closing a run's iterator (what Stop and Gradio's cancel do) ends it between two steps and takes it out of
    the model thread's count at once: the run beside it is not kept waiting for a question that never comes."""
    pipe = tiny_pipeline
    keep = pipe.prepare(images_per_prompt([PROMPT], 2.0, 3, 2), 5, "ddim")
    backend = LocalBackend(batch_wait_s=30)
    batcher = backend.batcher(pipe.model)
    stopped = iter(backend.run(pipe, pipe.prepare(images_per_prompt(["A white daisy"], 2.0, 4, 1), 50, "ddim")))
    steps_taken = [next(stopped).step, next(stopped).step]
    result = {}
    worker = threading.Thread(target=lambda: result.update(images=run_to_end(backend.run(pipe, keep)).images))
    worker.start()
    while batcher.in_flight() < 2 and worker.is_alive():
        time.sleep(0.005)
    stopped.close()
    assert steps_taken == [1, 2] and batcher.in_flight() <= 1
    worker.join(timeout=120)
    backend.close()
    assert_same_picture(result["images"], run_to_end(pipe.sample(keep)).images)
    assert batcher.in_flight() == 0 and batcher.counts["questions"] == 2 + keep.steps


class Failing(torch.nn.Module):
    def forward(self, x, t, cond):
        if x.shape[0] == 3:
            raise RuntimeError("the forward broke")
        return x * 0


def test_a_failed_forward_is_each_runs_own_error_and_the_model_thread_goes_on():
    batcher = StepBatcher(Failing(), batch_wait_s=0)
    x, t, c = torch.ones(2, 3, 4, 4), torch.zeros(2), torch.zeros(2, 8)
    assert torch.equal(batcher.predict(x, t, c), torch.zeros(2, 3, 4, 4))
    with pytest.raises(RuntimeError, match="the forward broke"):
        batcher.predict(torch.ones(3, 3, 4, 4), torch.zeros(3), torch.zeros(3, 8))
    assert torch.equal(batcher.predict(x, t, c), torch.zeros(2, 3, 4, 4)), "the next question is answered"
    batcher.close()
    with pytest.raises(RuntimeError, match="shut down"):
        batcher.predict(x, t, c)


def test_one_forward_takes_at_most_max_rows(tiny_pipeline):
    """Four runs of 3 images (6 rows each) under a 12-row limit: no forward takes more than two of them."""
    pipe = tiny_pipeline
    runs = [pipe.prepare(images_per_prompt([PROMPT], 2.0, 10 * k, 3), 3, "ddim") for k in range(4)]
    backend = LocalBackend(max_rows=12, batch_wait_s=30)
    batcher = backend.batcher(pipe.model)
    rows, hook = rows_per_forward(pipe.model, hold_first_until=lambda: batcher.in_flight() == len(runs))
    try:
        together = drive_in_threads(backend, pipe, runs)
    finally:
        hook.remove()
        backend.close()
    assert max(rows) == 12 and sum(rows) == 4 * 6 * 3
    for run, images in zip(runs, together):
        assert_same_picture(images, run_to_end(pipe.sample(run)).images)


def test_the_ray_backend_without_ray_says_what_to_install(tiny_pipeline, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)            # as if Ray were not installed
    monkeypatch.delitem(sys.modules, "clipdiff.serving.ray_sampler", raising=False)
    import clipdiff.serving    # ... and forgotten by its package, or `from . import ray_sampler` finds it there

    monkeypatch.delattr(clipdiff.serving, "ray_sampler", raising=False)
    with pytest.raises(RuntimeError, match="pip install -r requirements-serve.txt"):
        make_backend("ray", tiny_pipeline, None, SamplerOptions())
    assert isinstance(make_backend("local"), LocalBackend)
    with pytest.raises(ValueError, match="unknown backend"):
        make_backend("dask")


def load_app_script():
    spec = importlib.util.spec_from_file_location("app_script", REPO_ROOT / "app.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_backend_chooser_loads_no_ray():
    """backend.py and ray_sampler.py share SamplerOptions through serving/options.py: importing the chooser (as
    app.py does) loads neither Ray nor the deployment's module."""
    import subprocess

    code = ("import sys, clipdiff.serving.backend; "
            "print(sorted(m for m in sys.modules if m == 'ray' or m.endswith('ray_sampler')))")
    found = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert found.returncode == 0 and found.stdout.strip() == "[]", found.stderr


def test_app_flags_local_by_default_one_switch_for_ray():
    app_script = load_app_script()
    local = app_script.parse_args([])
    assert (local.backend, local.concurrency, local.max_queue, local.ray_address) == ("local", MODEL_CONCURRENCY, 16, None)
    assert local.sampler_options == SamplerOptions(), "the flags' defaults are SamplerOptions' own"
    ray = app_script.parse_args(["--backend", "ray", "--replicas", "3", "--batch-wait-ms", "20"])
    assert ray.sampler_options == SamplerOptions(replicas=3, replica_cpus=1.0, max_batch_size=8, batch_wait_s=0.02)
    assert ray.concurrency == 3 * 8 and ray.max_queue == 48, "the front lets every replica fill its batches"
    assert ray.host == "127.0.0.1"
    fast_on_ray = app_script.parse_args(["--backend", "ray", "--fast", "some/student"])
    assert (fast_on_ray.backend, fast_on_ray.fast) == ("ray", "some/student"), "the replicas serve the fast mode too"
    for bad in (["--ray-address", "10.0.0.1:6379"], ["--backend", "ray", "--replicas", "0"],
                ["--backend", "ray", "--batch-wait-ms", "5000"], ["--backend", "dask"]):
        with pytest.raises(SystemExit):
            app_script.parse_args(bad)


# -- one generation in flight per session ------------------------------------------------------------------------
def test_in_flight_refuses_a_sessions_second_run_and_frees_it_however_the_first_ends():
    guard = InFlight()
    started = []

    def run(name, fail=False):
        def items(stop):
            started.append(name)
            yield 1
            if fail:
                raise ValueError("boom")
            yield 2
        return items

    first = guard.stream("a", run("first"))
    assert next(first) == 1 and guard.running("a")
    second = guard.stream("a", run("second"))
    with pytest.raises(AlreadyRunning):
        next(second)
    assert started == ["first"], "the refused run never started"
    assert list(guard.stream("b", run("other"))) == [1, 2], "another session is not held back"
    assert list(first) == [2] and not guard.running("a"), "finished: free"

    failing = guard.stream("a", run("failing", fail=True))
    next(failing)
    with pytest.raises(ValueError):
        next(failing)
    assert not guard.running("a"), "failed: free"

    cancelled = guard.stream("a", run("cancelled"))
    next(cancelled)
    cancelled.close()                               # what Gradio's cancel does
    assert not guard.running("a") and len(guard) == 0, "cancelled: free"
    assert list(guard.stream(None, run("direct"))) == [1, 2], "no session (a direct call): nothing to guard"


def test_in_flight_lets_exactly_one_of_many_simultaneous_clicks_through():
    guard, results, barrier = InFlight(), [], threading.Barrier(8)

    def click():
        barrier.wait()
        try:
            guard.acquire("same")
            results.append("ran")
        except AlreadyRunning:
            results.append("refused")

    threads = [threading.Thread(target=click) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == ["ran"] + ["refused"] * 7


def test_stop_sets_the_sessions_own_stop_event_and_answers_once_its_run_has_closed():
    guard, answers, seen = InFlight(), [], []
    assert not guard.stop("a", timeout=0) and not guard.stop(None, timeout=0), "nothing running: nothing to stop"

    def run(stop):
        while True:
            seen.append(stop.is_set())
            if stop.is_set():
                yield "stopped"
                return
            yield "step"

    mine, other = guard.stream("a", run), guard.stream("b", run)
    assert next(mine) == "step" and next(other) == "step"
    stopper = threading.Thread(target=lambda: answers.append(guard.stop("a", timeout=60)))
    stopper.start()
    assert guard._running["a"].wait(timeout=60), "Stop set the run's own stop event"
    assert not answers, "Stop waits while the run is in flight"
    assert next(mine) == "stopped" and next(other) == "step", "only the session's own run stops"
    with pytest.raises(StopIteration):
        next(mine)
    stopper.join()
    assert answers == [True] and not guard.running("a") and guard.running("b")
    stuck = guard.stream("c", lambda stop: iter(range(10)))
    next(stuck)
    assert not guard.stop("c", timeout=0.01), "a run that does not stop in time: Stop's wait ends anyway"
    stuck.close()


@pytest.fixture
def gated_app(gated_models):
    with app_in_this_process(gated_models, concurrency=3, max_queue=8) as app:
        yield gated_models.backend, app.url


def test_a_session_with_a_run_in_flight_is_told_to_wait_others_are_not(gated_app):
    from gradio_client import Client
    from gradio_client.exceptions import AppError

    backend, url = gated_app
    a, b = Client(url, verbose=False), Client(url, verbose=False)
    try:
        first = a.submit(PROMPT, 2.0, 3, "ddim", 1, 1, api_name="/generate")
        assert backend.holding.wait(120), "the first run never started"
        for api, args in (("/generate", (PROMPT, 2.0, 2, "ddim", 2, 1)), ("/sweep", (PROMPT, "0, 1", 2, 2, "ddim"))):
            with pytest.raises(AppError, match="already have a generation running in this session"):
                a.predict(*args, api_name=api)
        gallery, status, _ = b.predict(PROMPT, 2.0, 2, "ddim", 3, 1, api_name="/generate")
        assert "Done" in status, "another session runs while the first one is held"
        backend.release.set()
        _, status, _ = first.result(timeout=120)
        assert "Done" in status
        _, status, _ = a.predict(PROMPT, 2.0, 2, "ddim", 4, 1, api_name="/generate")
        assert "Done" in status, "the session is free again once its run is over"
    finally:
        a.close()
        b.close()


# -- the room measurement ----------------------------------------------------------------------------------------
def test_room_measures_a_live_app_and_writes_its_report(tiny_clip_dir, tiny_unet_dir, tmp_path):
    from clipdiff.commands import room
    from clipdiff.app.context import Models

    assert room.percentile([4.0, 1.0, 3.0, 2.0], 50) == 2.5 and room.percentile([], 95) is None
    models = Models.load(tiny_unet_dir, str(tiny_clip_dir), None, None, "cpu")
    with app_in_this_process(models, concurrency=1, max_queue=8) as app:
        out = tmp_path / "room.json"
        assert room.main(["--url", app.url, "--backend", "local", "--users", "2", "--think-s", "0.01",
                          "--duration", "600", "--requests-per-user", "2", "--steps", "2", "--sampler", "ddim",
                          "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert {"images_per_s", "p50_s", "p95_s", "errors", "replicas", "backend"} <= set(report)
    assert (report["backend"], report["replicas"], report["users"]) == ("local", 1, 2)
    assert report["errors"] == 0 and report["requests"] == 4 and report["images"] == 16, report["error_examples"]
    assert 0 < report["p50_s"] <= report["p95_s"] and report["images_per_s"] > 0
    assert report["machine"]["cpu_count"] == os.cpu_count()
    assert report["clients_cpu_s"] >= 0 and report["machine_cpu_s"] >= 0


def test_a_session_sends_what_gradio_client_sends_and_shows_what_it_shows():
    """Session.submit's request, from the app's config and API info: the parameters not given take their defaults,
    a gr.State input is sent as None; the answer leaves out gr.State outputs, and one output alone is itself."""
    from clipdiff.commands.room import Endpoint

    config = {"components": [{"id": 1, "type": "textbox"}, {"id": 2, "type": "state"}, {"id": 3, "type": "slider"},
                             {"id": 4, "type": "gallery"}, {"id": 5, "type": "button"}],
              "dependencies": [{"api_name": "other", "targets": [], "inputs": [], "outputs": []},
                               {"id": 7, "api_name": "go", "targets": [[5, "click"]], "inputs": [1, 2, 3],
                                "outputs": [4, 2]}]}
    info = {"named_endpoints": {"/go": {"parameters": [{"parameter_has_default": False},
                                                      {"parameter_has_default": True, "parameter_default": 2.0}]}}}
    endpoint = Endpoint.from_app(config, info, "/go")
    assert (endpoint.fn_index, endpoint.trigger_id) == (7, 5)
    assert endpoint.inputs(("a rose",)) == ["a rose", None, 2.0]
    assert endpoint.inputs(("a rose", 3.0)) == ["a rose", None, 3.0]
    with pytest.raises(TypeError):
        endpoint.inputs(())
    with pytest.raises(TypeError):
        endpoint.inputs(("a", 1.0, "one too many"))
    assert endpoint.answer([["image"], "state"]) == ["image"]
    with pytest.raises(ValueError, match="/missing"):
        Endpoint.from_app(config, info, "/missing")


def test_a_session_streams_a_generation_fetches_its_files_and_hears_refusals(gated_models):
    """The room's and the bench's client against the live app (a preview after every step): a run's previews arrive
    while it is still running (here held in flight after its first step); its answer is the gallery, the status and
    the seed, and every PNG it names is fetched; a refusal raises with the app's message; a cancelled run ends as
    cancelled and the session's next run goes through; closing the session ends its heartbeat."""
    from concurrent.futures import CancelledError

    from clipdiff.commands.room import AppError, Session

    backend = gated_models.backend
    with app_in_this_process(gated_models, concurrency=1, preview_every_s=0) as app:
        session = Session(app.url)
        try:
            job = session.submit(PROMPT, 2.0, 3, "ddim", 7, 2, api_name="/generate")
            assert backend.holding.wait(120), "the run never started"
            waited = time.monotonic()
            while not job.outputs():
                assert time.monotonic() - waited < 120, "no preview from the held run"
                time.sleep(0.01)
            assert not job.done(), "a preview arrives while the run is held"
            backend.release.set()
            gallery, status, seed = session.fetch_files(job.result(timeout=120))
            assert len(gallery) == 2 and "Done" in status and seed == 7
            assert len(job.outputs()) >= 2 and job.first_output_at is not None
            assert session.fetched_bytes == sum(os.path.getsize(g["image"]["path"]) for g in gallery)

            with pytest.raises(AppError, match="prompt"):
                session.predict("", 2.0, 2, "ddim", 1, 1, api_name="/generate")

            long = session.submit(PROMPT, 2.0, 400, "ddim", 1, 4, api_name="/generate")
            waited = time.monotonic()
            while len(long.outputs()) < 2:
                assert not long.done() and time.monotonic() - waited < 120, "no previews from the long run"
                time.sleep(0.01)
            assert long.cancel()
            with pytest.raises(CancelledError):
                long.result(timeout=120)
            assert not long.cancel(), "a run that has ended cannot be cancelled"
            _, status, _ = session.predict(PROMPT, 2.0, 2, "ddim", 3, 1, api_name="/generate")
            assert "Done" in status, "the session's next run, after a cancelled one"
        finally:
            session.close()
        assert not session._heartbeat.is_alive()


def test_a_full_queue_is_an_error_the_room_counts(gated_models):
    """With the app's queue full (one run held in flight, one waiting, max_queue=1), a room attendee's request is
    refused at once (the join's 503), and the room counts it as an error with the queue's message."""
    from clipdiff.commands import room

    backend = gated_models.backend
    with app_in_this_process(gated_models, concurrency=1, max_queue=1) as app:
        held, waiting = room.Session(app.url), room.Session(app.url)
        try:
            first = held.submit(PROMPT, 2.0, 3, "ddim", 1, 1, api_name="/generate")
            assert backend.holding.wait(120), "the first run never started"
            second = waiting.submit(PROMPT, 2.0, 2, "ddim", 2, 1, api_name="/generate")
            while second.event_id is None:          # in the queue once the join is answered
                assert not second.done(), second.result()
                time.sleep(0.01)
            report = room.run_room(app.url, users=1, think_s=0, duration_s=600, steps=2, sampler="ddim",
                                   requests_per_user=1)
            backend.release.set()
            assert "Done" in first.result(timeout=120)[1] and "Done" in second.result(timeout=120)[1]
        finally:
            backend.release.set()
            held.close()
            waiting.close()
    assert (report.requests, report.errors, report.images) == (1, 1, 0)
    assert "Queue is full" in report.error_examples[0], report.error_examples


def test_the_rooms_machine_cpu_counts_work_done_on_any_core():
    """machine_busy_s reads /proc/stat: CPU work done in between (here 0.5 s of this process's own) shows in it."""
    from clipdiff.commands import room

    before, used_before = room.machine_busy_s(), time.process_time()
    while time.process_time() - used_before < 0.5:
        sum(range(10_000))
    assert room.machine_busy_s() - before >= 0.4


# == the slow tier: a local Ray cluster with 2 CPUs and 2 replicas ==================================================
@pytest.fixture(scope="module")
def ray_backend(fast_pipeline, tiny_unet_dir, fast_dir):
    """The Sampler deployed by a front with the fast mode (app.py --backend ray --fast): the replicas hold the
    student beside the teacher; the tests' fronts without it (tiny_pipeline) use its teacher."""
    pytest.importorskip("ray", reason="Ray is not installed: pip install -r requirements-serve.txt")
    from clipdiff.serving.ray_sampler import start_local

    backend = start_local(fast_pipeline, tiny_unet_dir, SamplerOptions(replicas=2, replica_cpus=1, max_batch_size=8,
                                                                       batch_wait_s=0.01), num_cpus=2,
                          fast_dir=fast_dir)
    yield backend
    backend.close()


@pytest.fixture(scope="module")
def ray_and_local_apps(ray_backend, tiny_clip_dir, tiny_unet_dir):
    """Two fronts over the same models, one sampling locally, one on the Ray deployment."""
    from clipdiff.app.context import Models

    local = Models.load(tiny_unet_dir, str(tiny_clip_dir), None, None, "cpu")
    served = dataclasses.replace(local, backend=ray_backend)
    with app_in_this_process(local, concurrency=4, max_queue=16) as a, \
            app_in_this_process(served, concurrency=4, max_queue=16) as b:
        yield a.url, b.url


def replica_records(backend) -> list[dict]:
    return [r for s in backend.stats() for r in s["recent"]]


@pytest.mark.slow
@pytest.mark.parametrize("sampler", SAMPLERS)
def test_ray_streams_every_step_and_makes_the_local_pictures(ray_backend, tiny_pipeline, sampler):
    jobs = images_per_prompt(["a red rose", "a white daisy"], 2.0, 11, 2)
    served = list(ray_backend.run(tiny_pipeline, tiny_pipeline.prepare(jobs, 4, sampler), record_every=1))
    local = list(tiny_pipeline.run(jobs, steps=4, sampler=sampler, record_every=1))
    assert [p.step for p in served] == [1, 2, 3, 4] and served[-1].images is not None
    assert_same_picture(served[-1].images, local[-1].images)
    for s, l in zip(served, local):
        assert np.abs(to_uint8(s.x0).astype(int) - to_uint8(l.x0).astype(int)).max() <= MAX_LEVELS
        assert s.record.step == l.record.step and s.record.x_t.shape == l.record.x_t.shape


@pytest.mark.slow
def test_ray_carries_negative_prompts_and_prompt_switches(ray_backend, tiny_pipeline):
    """A request's negative conditions and switch travel with it; the replica makes the local pictures."""
    jobs = [Job("a red rose", 2.0, 3, negative="red"), Job("a red rose", 2.0, 3),
            Job("a white daisy", 2.0, 4, switch_to="a sunflower", switch_at=0.5)]
    served = list(ray_backend.run(tiny_pipeline, tiny_pipeline.prepare(jobs, 4, "dpmsolver"), record_every=1))
    local = list(tiny_pipeline.run(jobs, steps=4, sampler="dpmsolver", record_every=1))
    assert_same_picture(served[-1].images, local[-1].images)
    plain = tiny_pipeline.generate([Job("a red rose", 2.0, 3)] * 3, steps=4, sampler="dpmsolver").images
    assert not torch.allclose(served[-1].images[0], plain[0], atol=1e-2), "the negative reached the replica"


@pytest.mark.slow
def test_ray_serves_a_fast_request_beside_a_teacher_request_with_the_local_pictures(ray_backend, fast_pipeline):
    """A fast run and a teacher run at once through the ray backend: the fast one on the replicas' student (its own
    batch method), the teacher's beside it, each the local backend's pictures within one uint8 level."""
    from clipdiff.serving.backend import LocalBackend

    pipe = fast_pipeline
    jobs = images_per_prompt(["a red rose", "a white daisy"], 2.0, 11, 2)
    runs = {"fast": pipe.prepare(jobs, 4, "fast"), "ddim": pipe.prepare(jobs, 4, "ddim")}
    before = sum(s["counts"].get("student_forwards", 0) for s in ray_backend.stats())
    served = dict(zip(runs, drive_in_threads(ray_backend, pipe, list(runs.values()))))
    local = LocalBackend()
    try:
        for sampler, run in runs.items():
            assert_same_picture(served[sampler], run_to_end(local.run(pipe, run)).images)
    finally:
        local.close()
    assert not torch.allclose(served["fast"], served["ddim"], atol=1e-2), "the student answered the fast run"
    after = sum(s["counts"].get("student_forwards", 0) for s in ray_backend.stats())
    assert after - before >= 4, "one student forward a step at least (4 steps)"


@pytest.mark.slow
def test_the_ray_deployment_names_its_student_and_refuses_fronts_with_another(ray_backend, fast_pipeline,
                                                                             tiny_pipeline):
    """describe() names the student; check() (what start_local and connect run) takes the front that deployed it
    and a front without the fast mode, and refuses in words a front with another student; a replica refuses a
    fast request outside the w its student learned."""
    import copy

    assert ray_backend.handle.describe.remote().result()["student_id"] == fast_pipeline.student_id
    ray_backend.check(fast_pipeline)
    ray_backend.check(tiny_pipeline)     # no --fast: today's behaviour, the teacher only
    other = copy.copy(fast_pipeline).use_student(fast_pipeline.student, fast_pipeline.student_config,
                                                 "fast-0123456789")
    with pytest.raises(RuntimeError, match=f"serves {fast_pipeline.student_id}, but this app loaded the fast "
                                           "mode's fast-0123456789"):
        ray_backend.check(other)
    run = fast_pipeline.prepare([Job("a red rose", 9.0, 1)], 2, "fast")
    with pytest.raises(Exception, match="learned w from 0 to 4, not w = 9"):
        list(ray_backend.run(fast_pipeline, run))


@pytest.mark.slow
def test_a_front_with_another_student_joining_the_cluster_is_refused_in_words(ray_backend, tiny_clip_dir,
                                                                              tiny_unet_dir, tmp_path):
    """app.py --backend ray --ray-address ... --fast OTHER against the deployment that serves the test's student:
    connect() finds the deployment, and the front exits saying which student each has."""
    import subprocess

    import ray

    from clipdiff.pipeline import model_id_of
    from clipdiff.testing import make_tiny_student

    other = make_tiny_student(tmp_path / "other", tiny_unet_dir, seed=1)
    served = ray_backend.handle.describe.remote().result()["student_id"]
    assert model_id_of(other) != served
    front = subprocess.run(
        [sys.executable, "app.py", "--backend", "ray", "--ray-address", ray.get_runtime_context().gcs_address,
         "--unet", str(tiny_unet_dir), "--clip", str(tiny_clip_dir), "--atlas", str(tmp_path / "no-atlas"),
         "--fast", str(other), "--port", str(free_port())],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert front.returncode != 0
    assert f"serves {served}, but this app loaded the fast mode's {model_id_of(other)}" in front.stderr + front.stdout


def png(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB")).astype(int)


@pytest.mark.slow
def test_every_sampling_endpoint_through_ray_gives_the_local_images(ray_and_local_apps, tmp_path):
    from gradio_client import Client, handle_file

    answers = {}
    for name, url in zip(("local", "ray"), ray_and_local_apps):
        client = Client(url, verbose=False)
        try:
            job = client.submit(f"{PROMPT}\na white daisy", 2.0, 4, "dpmsolver-karras", 5, 2, api_name="/generate")
            updates = list(job)
            gallery, status, _ = job.outputs()[-1]
            gif = client.predict(1, api_name="/playback_gif")
            grid, sweep_gallery, _, _ = client.predict(PROMPT, "-1, 2", 3, 3, "ddim", api_name="/sweep")
            strip, _, _ = client.predict(PROMPT, "a white daisy", 3, 1.0, 4, 3, "ddim", api_name="/interpolate")
            picture = tmp_path / "red.png"
            Image.new("RGB", (40, 30), (200, 30, 40)).save(picture)
            variations, _, _, _ = client.predict(handle_file(str(picture)), 2, 1.0, 6, 3, "ddim", api_name="/vary")
        finally:
            client.close()
        assert "Done" in status and len(gallery) == 4
        assert any("Sampling: step" in u[1] for u in updates[:-1]), "previews streamed while sampling"
        with Image.open(gif) as im:
            assert im.n_frames == 4, "playback recorded every step"
        answers[name] = [png(g["image"]) for g in gallery] + [png(g["image"]) for g in sweep_gallery] + \
            [png(strip), png(grid)] + [png(v["image"]) for v in variations]
    assert len(answers["ray"]) == len(answers["local"]) == 4 + 2 + 2 + 2
    for served, local in zip(answers["ray"], answers["local"]):
        assert served.shape == local.shape and np.abs(served - local).max() <= MAX_LEVELS


@pytest.mark.slow
def test_stop_through_the_app_stops_the_replica(ray_and_local_apps, ray_backend):
    from gradio_client import Client

    _, url = ray_and_local_apps
    before = {r["request"] for r in replica_records(ray_backend)}
    client = Client(url, verbose=False)
    try:
        job = client.submit(PROMPT, 2.0, 400, "ddim", 1, 4, api_name="/generate")
        deadline = time.monotonic() + 120
        while len(job.outputs()) < 3:                   # previews stream from the replica
            assert not job.done() and time.monotonic() < deadline, "no previews from the long run"
            time.sleep(0.02)
        job.cancel()
        while not (new := [r for r in replica_records(ray_backend) if r["request"] not in before]):
            assert time.monotonic() < deadline, "the replica never finished the cancelled request"
            time.sleep(0.05)
    finally:
        client.close()
    record = new[0]
    assert record["outcome"] == "cancelled" and record["total"] == 400
    assert record["steps"] < record["total"], "the replica ran on after Stop"
    assert all(not s["active"] for s in ray_backend.stats()), "no request still running on a replica"


@pytest.mark.slow
def test_stop_of_a_run_on_ray_stops_the_replica_and_the_run_says_where(ray_backend, tiny_clip_dir, tiny_unet_dir):
    """The page's Stop (cooperative: the run's stop event) on the Ray tier: the front stops reading, the replica's
    request is cancelled, and the run's last output says where it stopped."""
    from clipdiff.app.context import Context, Models
    from clipdiff.app.runs import stop_run
    from clipdiff.app.tabs import generate

    models = dataclasses.replace(Models.load(tiny_unet_dir, str(tiny_clip_dir), None, None, "cpu"), backend=ray_backend)
    ctx = Context.create(models, preview_every_s=0)
    before = {r["request"] for r in replica_records(ray_backend)}
    session = SimpleNamespace(session_hash="ray-stop")
    run = generate.generate(ctx, PROMPT, 2.0, 400, "ddim", 1, 4, "", request=session)
    assert next(run)[1].startswith("Sampling: step 1 of 400")
    stopper = threading.Thread(target=stop_run, args=(ctx, 0, session))
    stopper.start()
    *_, last = list(run)
    stopper.join()
    assert last[1].startswith("**Stopped at step") and last[0][0][1].startswith("UNFINISHED")
    deadline = time.monotonic() + 120
    while not (new := [r for r in replica_records(ray_backend) if r["request"] not in before]):
        assert time.monotonic() < deadline, "the replica never finished the stopped request"
        time.sleep(0.05)
    assert new[0]["outcome"] == "cancelled" and new[0]["steps"] < 400, "the replica ran on after Stop"


@pytest.mark.slow
def test_four_clients_at_once_no_errors_and_both_replicas_serve(ray_and_local_apps, ray_backend):
    from gradio_client import Client

    _, url = ray_and_local_apps
    served_before = ray_backend.served()
    errors, done, start = [], [], threading.Barrier(4)

    def attendee(k: int) -> None:
        client = Client(url, verbose=False)
        try:
            start.wait()
            for i in range(3):
                gallery, status, _ = client.predict(PROMPT, 2.0, 6, "dpmsolver-karras", 100 * k + i, 2,
                                                    api_name="/generate")
                assert "Done" in status and len(gallery) == 2, status
                done.append(k)
        except Exception as e:   # noqa: BLE001 (collected and asserted below)
            errors.append(repr(e))
        finally:
            client.close()

    threads = [threading.Thread(target=attendee, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and len(done) == 12
    now = ray_backend.served()
    assert sum(now.values()) - sum(served_before.values()) == 12
    assert len([r for r in now if now[r] > served_before.get(r, 0)]) == 2, f"one replica did all: {now}"
    stats = ray_backend.stats()
    assert len(stats) == 2 and all(s["counts"].get("done", 0) > 0 for s in stats)


@pytest.mark.slow
def test_a_local_ray_is_loopback_only_token_authenticated_and_quiet(ray_backend):
    """Safe by default: every Ray and Serve server of the local instance on 127.0.0.1, Ray's token authentication
    on, no dashboard UI, no Serve HTTP proxy, no usage statistics."""
    import os

    from ray import serve

    assert os.environ.get("RAY_AUTH_MODE") == "token" and os.environ.get("RAY_USAGE_STATS_ENABLED") == "0"
    assert not serve.status().proxies, "a Serve HTTP proxy is running"
    psutil = pytest.importorskip("psutil")
    processes = [psutil.Process()] + psutil.Process().children(recursive=True)
    names = {p.pid: p.name() for p in processes}
    listening = set()
    for p in processes:
        try:
            listening |= {(c.laddr.ip, c.laddr.port, names[p.pid]) for c in p.net_connections("inet")
                          if c.status == psutil.CONN_LISTEN}
        except psutil.NoSuchProcess:
            continue
    assert any("raylet" in n or "gcs" in n for _, _, n in listening), "Ray's own servers were not seen"
    beyond = {x for x in listening if x[0] not in ("127.0.0.1", "::1", "::ffff:127.0.0.1")}
    assert not beyond, f"listening beyond loopback: {beyond}"
    assert 8265 not in {port for _, port, _ in listening}, "the Ray dashboard is up"


def wait_until_answers(url: str, process, deadline: float) -> None:
    """Event-based: poll until the server answers (or its process died, or the deadline for a broken setup)."""
    import urllib.request

    while True:
        assert process.poll() is None, f"{process.args[:3]}... exited with {process.returncode}"
        try:
            with urllib.request.urlopen(url + "gradio_api/app_id", timeout=5):
                return
        except OSError:
            assert time.monotonic() < deadline, f"{url} never answered"
            time.sleep(0.5)


def wait_until_proxy_sees_both_fronts(proxy: str, deadline: float) -> None:
    """HAProxy marks a front up after its health checks pass: until then new sessions all go to the other one.
    Event-based: ask without a cookie until both fronts have been handed out."""
    import urllib.request

    seen = set()
    while seen != {"front1", "front2"}:
        assert time.monotonic() < deadline, f"HAProxy only ever chose {seen}"
        with urllib.request.urlopen(proxy + "gradio_api/app_id", timeout=5) as r:
            seen |= {c.split(";")[0].split("=", 1)[1] for c in r.headers.get_all("Set-Cookie") or []
                     if c.startswith("CLIPDIFF_FRONT=")}
        time.sleep(0.2)


@pytest.mark.slow
def test_haproxy_keeps_sessions_on_their_front_and_both_fronts_share_one_deployment(ray_backend, tiny_clip_dir,
                                                                                    tiny_unet_dir, tmp_path):
    """deploy/haproxy.cfg as shipped, over two app.py fronts that join the test's Ray cluster (--ray-address) and
    share its Sampler deployment; then a small room measured through the proxy."""
    import os
    import shutil
    import subprocess

    import ray
    from gradio_client import Client

    from clipdiff.commands.room import run_room

    haproxy = shutil.which("haproxy")
    if haproxy is None:
        pytest.skip("haproxy is not installed (apt-get install haproxy)")
    address = ray.get_runtime_context().gcs_address
    front_ports, proxy_port = [free_port(), free_port()], free_port()
    processes = []
    try:
        for port in front_ports:
            log = open(tmp_path / f"front-{port}.log", "w")
            processes.append(subprocess.Popen(
                [sys.executable, "app.py", "--backend", "ray", "--ray-address", address, "--unet", str(tiny_unet_dir),
                 "--clip", str(tiny_clip_dir), "--atlas", str(tmp_path / "no-atlas"), "--port", str(port),
                 "--concurrency", "4"], cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT))
        env = {**os.environ, "CLIPDIFF_LISTEN": f"127.0.0.1:{proxy_port}",
               "CLIPDIFF_FRONT1": f"127.0.0.1:{front_ports[0]}", "CLIPDIFF_FRONT2": f"127.0.0.1:{front_ports[1]}"}
        processes.append(subprocess.Popen([haproxy, "-db", "-f", str(REPO_ROOT / "deploy" / "haproxy.cfg")], env=env,
                                          stdout=open(tmp_path / "haproxy.log", "w"), stderr=subprocess.STDOUT))
        deadline = time.monotonic() + 600
        for port, process in zip(front_ports, processes):
            wait_until_answers(f"http://127.0.0.1:{port}/", process, deadline)
        proxy = f"http://127.0.0.1:{proxy_port}/"
        wait_until_answers(proxy, processes[2], deadline)
        wait_until_proxy_sees_both_fronts(proxy, deadline)
        requests_before = sum(s["counts"].get("requests", 0) for s in ray_backend.stats())

        clients = [Client(proxy, verbose=False) for _ in range(4)]     # four sessions, one after another
        try:
            for k, client in enumerate(clients):
                gallery, status, _ = client.predict(PROMPT, 2.0, 3, "ddim", k, 2, api_name="/generate")
                assert "Done" in status and len(gallery) == 2
                with Image.open(client.predict(0, api_name="/playback_gif")) as gif:   # state of the front that ran it
                    assert gif.n_frames == 3
            fronts = sorted(c.cookies.get("CLIPDIFF_FRONT") for c in clients)
        finally:
            for client in clients:
                client.close()
        assert fronts == ["front1", "front1", "front2", "front2"], \
            f"new sessions alternate between the fronts; HAProxy said:\n{(tmp_path / 'haproxy.log').read_text()}"
        assert sum(s["counts"].get("requests", 0) for s in ray_backend.stats()) - requests_before == 4, \
            "the fronts sampled on the one deployment"
        from ray import serve
        assert list(serve.status().applications) == ["clipdiff"], "a front deployed a second Sampler"

        report = run_room(proxy, users=4, think_s=0.01, duration_s=600, backend="ray", replicas=2, steps=2,
                          sampler="ddim", requests_per_user=2)
        assert report.errors == 0 and report.images == 4 * 2 * 4, report.error_examples
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
