"""python -m clipdiff bench: how fast clipdiff is on this machine, against the targets and the reference procedure.

    python -m clipdiff bench --json benchmarks/bench.json --out benchmarks/grids     # the shipped models
    python -m clipdiff bench --quick --skip-app                                     # a quick look
    python -m clipdiff bench --unet DIR --clip DIR --atlas DIR                      # other models

Every figure is the median of repeated trials after a warm-up, measured in one run, and printed as a table
next to its target (benchmarks/README.md says what each key measures). Three layers are timed:
  core    the pipeline as the app's Generate handler drives it, through the same streaming loop
          (sampling.stream): prompts encoded with the text cache cleared, every step recorded for playback, the
          current x0 turned into preview frames at most every PREVIEW_EVERY_S;
  parts   the U-Net alone, a playback frame as the slider shows it, one prompt placed on the map, the atlas;
  app     the real `python app.py` in a subprocess on 127.0.0.1, driven as a browser (room.Session): start-up,
          memory over many generations, many clients at once. The subprocess is always ended.
The reference procedure (400 DDPM steps, the `sample_w` doubled batch, 3 prompts x 7 w) runs on the same
U-Net as clipdiff's default sampler, so the speed-up is the sampler's alone; both grids are saved as PNGs.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from io import BytesIO
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from ..checkpoints import DEFAULT_ATLAS_DIR, DEFAULT_FAST_DIR, DEFAULT_UNET_DIR, CheckpointError
from ..pipeline import REFERENCE_PROMPTS, REFERENCE_WS, ClipDiffusionPipeline, images_per_prompt, sweep
from ..runtimes import DEFAULT_RUNTIME, PRECISIONS, RUNTIMES, RuntimeUnavailable, runtime_of
from ..sampling import DEFAULT_SAMPLER, DEFAULT_STEPS, DEFAULT_W, STEPS_RANGE, default_steps, stream, to_uint8
from ..schedulers import SAMPLERS, STUDENT_SAMPLERS
from .bench_runtimes import bench_runtimes, runtime_table
from .measured import machine
from .room import Session

# The four prompts of `generate_4_s`: the reference's three and one more, one image each.
GENERATE_PROMPTS = (*REFERENCE_PROMPTS, "A bright yellow daffodil")
MAP_PROMPTS = ("A pink lotus flower on a pond", "A purple iris with yellow markings", "A white lily",
               "A red poppy in a field", "A blue morning glory")
REFERENCE_STEPS = 400           # the reference samples every one of its T=400 steps
REFERENCE_SAMPLER = "ddpm"
SEED = 0
REPO_ROOT = Path(__file__).resolve().parents[2]
REQUEST_TIMEOUT_S = 600

KEYS = ("unet_forward_ms_b8", "generate_4_s", "first_preview_s", "sampler_overhead_ratio", "reference_s",
        "speedup_vs_reference", "playback_frame_ms", "map_place_ms", "atlas_load_s", "app_ready_s",
        "peak_rss_mb", "rss_growth_mb", "concurrent_p95_s", "concurrent_errors", "front_ratio")
FAST_KEYS = ("generate_4_s_fast", "first_preview_s_fast")     # with --fast only (the fast mode is opt-in)
# The issues' targets on 2 CPU cores: (comparison, value); generate_4_s with the default runtime (issue 23).
TARGETS = {"generate_4_s": ("<=", 0.5), "first_preview_s": ("<=", 0.25), "sampler_overhead_ratio": ("<=", 1.10),
           "speedup_vs_reference": (">=", 20.0), "playback_frame_ms": ("<=", 50.0), "map_place_ms": ("<=", 100.0),
           "app_ready_s": ("<=", 15.0), "peak_rss_mb": ("<=", 1500.0), "rss_growth_mb": ("<=", 50.0),
           "concurrent_errors": ("<=", 0), "front_ratio": ("<=", 1.25)}


@dataclass
class Plan:
    """How much to repeat each measurement; --quick shrinks everything for a smoke test."""
    warmup: int = 2
    unet_trials: int = 20
    generate_trials: int = 7
    grid_trials: int = 3
    playback_trials: int = 50
    map_trials: int = 20
    atlas_trials: int = 5
    reference_steps: int = REFERENCE_STEPS
    app_starts: int = 2
    rss_generations: int = 50
    rss_baseline: int = 10        # rss_growth_mb is RSS after rss_generations minus RSS after this many
    clients: int = 8
    requests_per_client: int = 5
    runtime_trials: int = 10      # interleaved rounds of every runtime's forwards and generations

    @classmethod
    def quick(cls) -> "Plan":
        return cls(warmup=1, unet_trials=3, generate_trials=2, grid_trials=1, playback_trials=5, map_trials=3,
                   atlas_trials=2, reference_steps=10, app_starts=1, rss_generations=4, rss_baseline=2, clients=2,
                   requests_per_client=2, runtime_trials=2)


def median(xs) -> float:
    return float(statistics.median(xs))


def repeat(fn, trials: int, warmup: int) -> list[float]:
    """Seconds per call of fn(), warm-up calls dropped."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(trials):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


# -- core ------------------------------------------------------------------------------------------------------
def unet_forward(pipe: ClipDiffusionPipeline):
    """One forward at batch 8: 4 images, conditional and unconditional, as one sampler step sends them."""
    model, cfg = pipe.model, pipe.model.config
    g = torch.Generator("cpu").manual_seed(SEED)
    x = torch.randn(8, cfg.channels, cfg.image_size, cfg.image_size, generator=g)
    t = torch.randint(0, pipe.config.schedule.num_train_timesteps, (8,), generator=g)
    cond = torch.cat([pipe.prepare(images_per_prompt(list(GENERATE_PROMPTS), DEFAULT_W, SEED, 1)).inputs.cond,
                      model.null_condition(4).detach()])

    def forward():
        with torch.inference_mode():
            model(x, t, cond)
    return forward


class ForwardTimer:
    """Seconds spent inside the U-Net's forward calls while active (torch forward hooks): the network's share
    of a generation, measured in the generation itself."""

    def __init__(self, model: torch.nn.Module):
        self.model, self.seconds, self._t0 = model, 0.0, 0.0

    def __enter__(self) -> "ForwardTimer":
        self._hooks = [self.model.register_forward_pre_hook(self._start),
                       self.model.register_forward_hook(self._stop)]
        return self

    def _start(self, *_) -> None:
        self._t0 = time.perf_counter()

    def _stop(self, *_) -> None:
        self.seconds += time.perf_counter() - self._t0

    def __exit__(self, *exc) -> None:
        for hook in self._hooks:
            hook.remove()


def generate_once(pipe: ClipDiffusionPipeline, jobs, steps: int, sampler: str) -> dict:
    """One click at the core: encode (cache cleared: every trial pays for encoding its prompts, as a first click
    does), then the app's streaming loop, recording every step (sampling.stream, at the app's preview rate)."""
    pipe.encoder.clear_text_cache()
    t0 = time.perf_counter()
    first = None
    with ForwardTimer(pipe.model) as network:
        for frames in stream(pipe.run(jobs, steps=steps, sampler=sampler, record_every=1)):
            if first is None:
                first = time.perf_counter() - t0
    total = time.perf_counter() - t0
    return {"total": total, "first": first, "calls": frames.total, "records": frames.records,
            "images": frames.images, "network": network.seconds}


def bench_core(pipe: ClipDiffusionPipeline, plan: Plan, steps: int, sampler: str,
               fast_steps: int | None = None) -> tuple[dict, list]:
    """The bare U-Net forward and the generation, their trials interleaved: on a shared (virtual) machine the
    speed drifts by 10-20 % within a minute, and sampler_overhead_ratio divides one by the other. With the fast
    mode's student loaded (fast_steps), its click goes into every trial too: generate_4_s_fast, the same 4 images
    at fast_steps student steps, beside the teacher's on the same machine at the same moment."""
    forward = unet_forward(pipe)
    jobs = images_per_prompt(list(GENERATE_PROMPTS), DEFAULT_W, SEED, 1)
    fast = fast_steps is not None and pipe.student is not None
    for _ in range(plan.warmup):
        forward()
        generate_once(pipe, jobs, steps, sampler)
        if fast:
            generate_once(pipe, jobs, fast_steps, STUDENT_SAMPLERS[0])
    forwards_per_trial = max(3, -(-plan.unet_trials // plan.generate_trials))
    forward_s, runs, fast_runs = [], [], []
    for _ in range(plan.generate_trials):
        forward_s += repeat(forward, forwards_per_trial, 0)
        runs.append(generate_once(pipe, jobs, steps, sampler))
        if fast:
            fast_runs.append(generate_once(pipe, jobs, fast_steps, STUDENT_SAMPLERS[0]))

    def encode():
        pipe.encoder.clear_text_cache()
        pipe.encoder.encode_text(list(GENERATE_PROMPTS))

    encode_s = median(repeat(encode, plan.generate_trials, plan.warmup))
    calls = runs[-1]["calls"]
    forward_ms = median(forward_s) * 1000
    generate_s = median(r["total"] for r in runs)
    return {"unet_forward_ms_b8": forward_ms, "unet_parameters": pipe.model.num_parameters(),
            "image_size": pipe.model.config.image_size, "generate_4_s": generate_s,
            "first_preview_s": median(r["first"] for r in runs), "unet_calls": calls, "encode_4_ms": encode_s * 1000,
            "sampler_overhead_ratio": generate_s / (calls * forward_ms / 1000),
            "unet_in_loop_ms": median(r["network"] for r in runs) / calls * 1000,
            "loop_overhead_ratio": median(r["total"] / r["network"] for r in runs),
            **({"generate_4_s_fast": median(r["total"] for r in fast_runs), "fast_steps": fast_steps,
                "fast_model": pipe.student_id, "first_preview_s_fast": median(r["first"] for r in fast_runs)}
               if fast else {})}, runs[-1]["records"]


def grid_image(frames: np.ndarray, prompts, ws) -> Image.Image:
    from ..images import labelled_grid

    return labelled_grid(frames, rows=len(ws), cols=len(prompts), row_labels=[f"w = {w:g}" for w in ws],
                         col_labels=list(prompts))


def side_by_side(left: Image.Image, right: Image.Image, titles: tuple[str, str]) -> Image.Image:
    top = 24
    canvas = Image.new("RGB", (left.width + right.width + 16, max(left.height, right.height) + top), "white")
    canvas.paste(left, (0, top))
    canvas.paste(right, (left.width + 16, top))
    draw = ImageDraw.Draw(canvas)
    draw.text((4, 4), titles[0], fill="black")
    draw.text((left.width + 20, 4), titles[1], fill="black")
    return canvas


def bench_reference(pipe: ClipDiffusionPipeline, plan: Plan, steps: int, sampler: str, out: Path | None) -> dict:
    """The reference's grid at its 400 DDPM steps against clipdiff's default sampler, same U-Net, same seed."""
    jobs = sweep(list(REFERENCE_PROMPTS), list(REFERENCE_WS), SEED)

    def grid(steps: int, sampler: str) -> np.ndarray:
        pipe.encoder.clear_text_cache()
        return to_uint8(pipe.generate(jobs, steps=steps, sampler=sampler).images)

    frames = {}
    default_times = repeat(lambda: frames.__setitem__("default", grid(steps, sampler)),
                           plan.grid_trials, plan.warmup)
    t0 = time.perf_counter()
    frames["reference"] = grid(plan.reference_steps, REFERENCE_SAMPLER)
    measured = time.perf_counter() - t0
    # Every DDPM step costs the same (one batch-42 forward), so fewer steps extrapolate linearly to 400.
    reference_s = measured * REFERENCE_STEPS / plan.reference_steps
    default_s = median(default_times)
    result = {"reference_s": reference_s, "speedup_vs_reference": reference_s / default_s,
              "reference_steps": plan.reference_steps, "reference_measured_s": measured,
              "reference_extrapolated": plan.reference_steps != REFERENCE_STEPS, "default_grid_s": default_s,
              "grid_images": len(jobs), "grid_batch": 2 * len(jobs)}
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        ref = grid_image(frames["reference"], REFERENCE_PROMPTS, REFERENCE_WS)
        default = grid_image(frames["default"], REFERENCE_PROMPTS, REFERENCE_WS)
        ref.save(out / "reference_grid.png")
        default.save(out / "default_grid.png")
        side_by_side(ref, default, (
            f"reference: {plan.reference_steps} DDPM steps, {reference_s:.1f} s (for 400 steps)",
            f"clipdiff: {sampler}, {steps} steps, {default_s:.2f} s")).save(out / "side_by_side.png")
        result["grids"] = str(out)
    return result


def bench_playback(pipe: ClipDiffusionPipeline, records: list, plan: Plan) -> dict:
    """One recorded frame as the slider shows it: PlaybackRun.frame (what the playback tab's scrub calls), then
    PNG-encoded, as Gradio sends it to the browser."""
    from ..playback import make_playback

    labels = [f"{p} (seed {SEED})" for p in GENERATE_PROMPTS]
    t0 = time.perf_counter()
    run = make_playback(pipe.encoder, labels, records, pipe.encoder.encode_text(list(GENERATE_PROMPTS)))
    prepare_s = time.perf_counter() - t0
    positions = [(k % len(records), k % run.num_samples) for k in range(plan.playback_trials + plan.warmup)]
    cursor = iter(positions)

    def show():
        step, sample = next(cursor)
        run.frame(step, sample).save(BytesIO(), format="png")

    times = repeat(show, plan.playback_trials, plan.warmup)
    return {"playback_frame_ms": median(times) * 1000, "playback_prepare_s": prepare_s,
            "playback_records": len(records)}


def bench_atlas(pipe: ClipDiffusionPipeline, atlas_dir: Path, plan: Plan) -> dict:
    """Atlas.load, and one new prompt placed as the map handler does: encode it, then Atlas.place."""
    from ..atlas import Atlas

    load_times = repeat(lambda: Atlas.load(atlas_dir), plan.atlas_trials, 1)
    atlas = Atlas.load(atlas_dir)
    method = Atlas.METHODS[0]                  # the map's default view
    prompts = iter(MAP_PROMPTS * (1 + (plan.map_trials + plan.warmup) // len(MAP_PROMPTS)))

    def place():
        pipe.encoder.clear_text_cache()
        atlas.place(pipe.encoder.encode_text([next(prompts)]).numpy(), method, "text")

    times = repeat(place, plan.map_trials, plan.warmup)
    return {"atlas_load_s": median(load_times), "map_place_ms": median(times) * 1000, "map_method": method,
            "atlas_points": int(len(atlas.image_emb) + len(atlas.text_emb))}


# -- the live app ----------------------------------------------------------------------------------------------
def generate_request(client: Session, seed: int, steps: int, sampler: str) -> tuple[float, float]:
    """One Generate click through the API, as the browser makes it: the 4 prompts, the app's defaults, the final
    PNGs fetched. Returns (seconds to the first streamed output, seconds to the final images): the first output's
    time is taken by the session's reader when the message arrives, so waiting here needs no polling."""
    t0 = time.perf_counter()
    job = client.submit("\n".join(GENERATE_PROMPTS), DEFAULT_W, steps, sampler, seed, 1,
                        api_name="/generate")
    try:
        answer = job.result(timeout=REQUEST_TIMEOUT_S)
    except TimeoutError:
        if job.done():
            raise
        job.cancel()
        raise TimeoutError(f"no result within {REQUEST_TIMEOUT_S} s") from None
    gallery, status, _ = client.fetch_files(answer)
    total = time.perf_counter() - t0
    if len(gallery) != len(GENERATE_PROMPTS) or "Done" not in status:
        raise RuntimeError(f"unexpected result: {len(gallery)} images, status {status[:200]!r}")
    return (job.first_output_at - t0 if job.first_output_at is not None else total), total


def bench_app(args, plan: Plan, log_dir: Path) -> dict:
    from ..testing.live import AppProcess

    ready = []
    for start in range(plan.app_starts):
        app = AppProcess(args.unet, args.clip, args.atlas, args.device, log_dir, args.threads)
        with app:
            ready.append(app.ready_s)
            if start < plan.app_starts - 1:
                continue
            result = {"app_ready_s": median(ready), "app_starts": len(ready)}
            client = Session(app.url)
            try:
                firsts, totals, baseline = [], [], None
                for k in range(1, plan.rss_generations + 1):
                    first, total = generate_request(client, SEED + k, args.steps, args.sampler)
                    if k > 1:                      # generation 1 is the warm-up
                        firsts.append(first)
                        totals.append(total)
                    if k == plan.rss_baseline:
                        baseline = app.memory_mb()["VmRSS"]
                memory = app.memory_mb()
            finally:
                client.close()
            result.update({"peak_rss_mb": memory["VmHWM"], "rss_mb": memory["VmRSS"],
                           "rss_growth_mb": memory["VmRSS"] - baseline, "rss_generations": plan.rss_generations,
                           "rss_baseline_generation": plan.rss_baseline,
                           "app_generate_4_s": median(totals or [total]),
                           "app_first_preview_s": median(firsts or [first])})
            result.update(bench_concurrent(app.url, plan, args.steps, args.sampler))
            result["peak_rss_mb_after_concurrent"] = app.memory_mb()["VmHWM"]
    return result


def front_ratio(result: dict) -> float | None:
    """A lone 4-image click through the app (app_generate_4_s: click to the final PNGs fetched) over the same
    generation at the core (generate_4_s: encoding, sampling with every step recorded, previews at the app's rate):
    what the front (queue, previews, CLIP scores, PNGs, playback records, downloads) adds to the sampling."""
    app, core = result.get("app_generate_4_s"), result.get("generate_4_s")
    return app / core if app and core else None


def bench_concurrent(url: str, plan: Plan, steps: int, sampler: str) -> dict:
    """clients threads, each its own session (room.Session), each sending requests_per_client in turn."""
    latencies, errors, lock = [], [], threading.Lock()
    clients = []
    for _ in range(plan.clients):
        try:
            clients.append(Session(url))
        except Exception as e:  # noqa: BLE001 - a client that cannot connect is an error to count, not a crash
            errors.append(f"connect: {type(e).__name__}: {e}")

    def worker(index: int, client) -> None:
        for r in range(plan.requests_per_client):
            try:
                _, total = generate_request(client, 1000 * index + r, steps, sampler)
                with lock:
                    latencies.append(total)
            except Exception as e:  # noqa: BLE001 - every failure is counted and shown
                with lock:
                    errors.append(f"{type(e).__name__}: {str(e)[:200]}")

    threads = [threading.Thread(target=worker, args=(i, c), daemon=True) for i, c in enumerate(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=REQUEST_TIMEOUT_S * plan.requests_per_client)
    wall = time.perf_counter() - t0
    for c in clients:
        try:
            c.close()
        except Exception:  # noqa: BLE001
            pass
    hung = sum(t.is_alive() for t in threads)
    errors += [f"client thread still running after its time"] * hung
    return {"concurrent_p95_s": float(np.percentile(latencies, 95)) if latencies else None,
            "concurrent_median_s": median(latencies) if latencies else None,
            "concurrent_errors": len(errors), "concurrent_requests": plan.clients * plan.requests_per_client,
            "concurrent_clients": plan.clients, "concurrent_wall_s": wall, "concurrent_error_messages": errors[:10]}


# -- report ----------------------------------------------------------------------------------------------------
def meets(key: str, value) -> str:
    if key not in TARGETS or value is None:
        return ""
    op, target = TARGETS[key]
    ok = value <= target if op == "<=" else value >= target
    return "yes" if ok else "NO"


def fmt(value) -> str:
    if value is None:
        return "skipped"
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1000 else f"{value:.0f}"
    return str(value)


def figure_rows(result: dict, keys) -> list[tuple[str, str, str, str]]:
    """(key, value, target, met) for each key: what both tables show."""
    return [(key, fmt(result.get(key)), " ".join(map(str, TARGETS[key])) if key in TARGETS else "",
             meets(key, result.get(key))) for key in keys]


def table(result: dict) -> str:
    rows = [("key", "value", "target", "met"), *figure_rows(result, (*KEYS, *(k for k in FAST_KEYS if k in result)))]
    for key in ("runtime", "cpu_model", "torch_threads", "torch_version"):
        rows.append((key, fmt(result.get(key)), "", ""))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def markdown_rows(result: dict) -> list[str]:
    """The figures as benchmarks/README.md shows them ("The shipped model"): key, value, target and whether it is
    met; a test holds that section to benchmarks/bench.json."""
    return ["| key | value | target: met |", "| --- | --- | --- |"] + [
        f"| `{key}` | {value} | {f'{target}: {met}' if target else '-'} |"
        for key, value, target, met in figure_rows(result, KEYS)]


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="clipdiff bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--unet", default=str(DEFAULT_UNET_DIR), help="diffusion checkpoint folder")
    parser.add_argument("--clip", default="default", help="'default' (checkpoints/clip) or a local open_clip folder")
    parser.add_argument("--atlas", default=str(DEFAULT_ATLAS_DIR), help="embedding atlas folder")
    parser.add_argument("--device", default="cpu", help="cpu (the target), cuda, ...")
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS,
                        help=f"sampler steps of the timed generations (default: the app's, {DEFAULT_STEPS})")
    parser.add_argument("--sampler", choices=SAMPLERS, default=DEFAULT_SAMPLER,
                        help=f"sampler of the timed generations (default: the app's, {DEFAULT_SAMPLER})")
    parser.add_argument("--fast", nargs="?", const=str(DEFAULT_FAST_DIR), default=None, metavar="DIR",
                        help="also time the fast mode's student (DIR default checkpoints/fast): generate_4_s_fast, "
                             "interleaved with the teacher's generate_4_s")
    parser.add_argument("--fast-steps", type=int, default=default_steps(STUDENT_SAMPLERS[0]),
                        help="student steps of generate_4_s_fast (default %(default)s)")
    parser.add_argument("--json", type=Path, default=None, help="write the figures here as JSON")
    parser.add_argument("--out", type=Path, default=None,
                        help="save the reference and default grids here (reference_grid.png, default_grid.png, "
                             "side_by_side.png) and the app's log")
    parser.add_argument("--quick", action="store_true",
                        help="few trials, few generations, 10 reference steps extrapolated to 400: a smoke test")
    parser.add_argument("--reference-steps", type=int, default=None,
                        help=f"DDPM steps actually run for the reference (default {REFERENCE_STEPS}, 10 with "
                             "--quick); fewer are extrapolated linearly to 400 and recorded as reference_steps")
    parser.add_argument("--threads", type=int, default=None, help="torch threads here and in the app (default: torch's)")
    parser.add_argument("--skip-reference", action="store_true", help="no reference grid (the slowest part)")
    parser.add_argument("--skip-app", action="store_true", help="do not launch the app (app_*, rss, concurrent keys)")
    parser.add_argument("--skip-atlas", action="store_true", help="no map placement or atlas loading")
    parser.add_argument("--skip-runtimes", action="store_true", help="no side-by-side rows of the U-Net runtimes")
    parser.add_argument("--runtime", choices=RUNTIMES, default=None,
                        help=f"the runtime of the core figures (default: the app's, {DEFAULT_RUNTIME} on the CPU)")
    parser.add_argument("--precision", choices=PRECISIONS, default="fp32", help="its precision (default fp32)")
    args = parser.parse_args(argv)
    if args.reference_steps is not None and not 1 <= args.reference_steps <= REFERENCE_STEPS:
        parser.error(f"--reference-steps must be between 1 and {REFERENCE_STEPS}")
    if not STEPS_RANGE[0] <= args.steps <= STEPS_RANGE[1]:
        parser.error(f"--steps must be between {STEPS_RANGE[0]} and {STEPS_RANGE[1]}")
    if args.threads is not None and args.threads < 1:
        parser.error("--threads must be at least 1")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    threads_before = torch.get_num_threads()
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        return run(args)
    finally:
        torch.set_num_threads(threads_before)


def run(args: argparse.Namespace) -> int:
    plan = Plan.quick() if args.quick else Plan()
    if args.reference_steps:
        plan.reference_steps = args.reference_steps
    result: dict = {key: None for key in KEYS}
    result.update(machine())
    skipped = []

    started = time.perf_counter()

    def stage(name: str) -> None:
        print(f"[bench {time.perf_counter() - started:6.1f} s] {name} ...", file=sys.stderr, flush=True)

    stage("loading models")
    t0 = time.perf_counter()
    try:
        pipe = ClipDiffusionPipeline.load(args.unet, args.clip, device=args.device, runtime=args.runtime,
                                          precision=args.precision, fast=args.fast)
    except (RuntimeUnavailable, CheckpointError) as e:
        sys.exit(f"error: {e}")
    result.update({"model": pipe.model_id, "runtime": runtime_of(pipe.model).label, "clip": pipe.encoder.identity,
                   "sampler": args.sampler,
                   "steps": args.steps, "defaults": args.sampler == DEFAULT_SAMPLER and args.steps == DEFAULT_STEPS,
                   "w": DEFAULT_W, "load_s": time.perf_counter() - t0,
                   "plan": asdict(plan), "quick": args.quick})
    stage("U-Net forward and generate (core), interleaved")
    core, records = bench_core(pipe, plan, args.steps, args.sampler, args.fast_steps if args.fast else None)
    result.update(core)
    if args.skip_runtimes:
        skipped.append("runtimes")
    else:
        stage("U-Net runtimes side by side, interleaved")
        jobs = images_per_prompt(list(GENERATE_PROMPTS), DEFAULT_W, SEED, 1)
        result.update(bench_runtimes(pipe, jobs, plan.runtime_trials, args.steps, args.sampler,
                                     lambda p: generate_once(p, jobs, args.steps, args.sampler)["total"]))
    stage("playback frame")
    result.update(bench_playback(pipe, records, plan))
    if args.skip_atlas:
        skipped.append("atlas")
    elif not (Path(args.atlas) / "atlas.safetensors").is_file():
        skipped.append(f"atlas (none at {args.atlas})")
    else:
        stage("atlas")
        result.update(bench_atlas(pipe, Path(args.atlas), plan))
    if args.skip_reference:
        skipped.append("reference")
    else:
        stage(f"reference grid ({plan.reference_steps} DDPM steps) and default grid")
        result.update(bench_reference(pipe, plan, args.steps, args.sampler, args.out))
    if args.skip_app:
        skipped.append("app")
    else:
        stage("live app")
        del pipe                                         # the app process holds its own copy
        log_dir = args.out or Path(tempfile.mkdtemp(prefix="clipdiff-bench-"))
        log_dir.mkdir(parents=True, exist_ok=True)
        result.update(bench_app(args, plan, log_dir))
        result["front_ratio"] = front_ratio(result)
    result["skipped"] = skipped
    result["targets"] = {k: {"op": op, "value": v, "met": meets(k, result.get(k)) or None}
                         for k, (op, v) in TARGETS.items()}
    print(table(result))
    if result.get("runtimes"):
        print(runtime_table(result, fmt))
    if skipped:
        print(f"skipped: {', '.join(skipped)}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2, default=_json_default) + "\n")
        print(f"figures written to {args.json}")
    return 0


def _json_default(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return str(value)


if __name__ == "__main__":
    sys.exit(main())
