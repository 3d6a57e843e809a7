"""bench's U-Net runtime rows: every runtime and precision that runs here, side by side in one run (clipdiff.runtimes).

Kept apart from bench.py, which calls it with its own timed generation, so that neither grows past reading.
"""
from __future__ import annotations

import time
from typing import Callable

import numpy as np
import torch

from ..pipeline import ClipDiffusionPipeline, Job
from ..runtimes import (DEFAULT_RUNTIME, PRECISIONS, RUNTIMES, Runtime, RuntimeUnavailable, eager_module, problems,
                        runtime_of, with_runtime)
from ..sampling import to_uint8

RUNTIME_BATCHES = (2, 8, 32)


def runtimes_here(device) -> list[Runtime]:
    """Every runtime and precision that can run on this machine (bf16 only where the CPU has it)."""
    return [Runtime(name, precision) for name in RUNTIMES for precision in PRECISIONS
            if not problems(name, precision, device)]


def bench_runtimes(pipe: ClipDiffusionPipeline, jobs: list[Job], rounds: int, steps: int, sampler: str,
                   generate: Callable[[ClipDiffusionPipeline], float]) -> dict:
    """Every runtime side by side on the same U-Net: forward ms at batch 2, 8 and 32 and generate_4_s, the
    minimum over rounds that take each runtime in turn (a shared machine's speed drifts, so the runtimes must be
    compared within one round), and how far each is from eager fp32: eps at batch 8 and the jobs' pixels.
    generate(pipe) is one timed generation of the jobs (bench's generate_4_s)."""
    eager = eager_module(pipe.model)
    device = next(eager.parameters()).device
    models, load_s, refused = {}, {}, {}
    for runtime in runtimes_here(device):
        t0 = time.perf_counter()
        try:
            models[runtime.label] = with_runtime(eager, runtime.name, runtime.precision)
        except RuntimeUnavailable as e:       # its load-time check against eager failed on this CPU
            refused[runtime.label] = str(e)
            continue
        load_s[runtime.label] = time.perf_counter() - t0    # the export is cached by now: session start or compile
    pipes = {label: ClipDiffusionPipeline(pipe.encoder, model, pipe.config, pipe.model_id)
             for label, model in models.items()}
    cfg, g = eager.config, torch.Generator("cpu").manual_seed(0)
    conds = pipe.prepare(jobs).inputs.cond
    batches = {b: (torch.randn(b, cfg.channels, cfg.image_size, cfg.image_size, generator=g),
                   torch.randint(0, pipe.config.schedule.num_train_timesteps, (b,), generator=g),
                   conds.repeat(-(-b // len(conds)), 1)[:b]) for b in RUNTIME_BATCHES}
    forward_s = {label: {b: [] for b in RUNTIME_BATCHES} for label in models}
    generate_s = {label: [] for label in models}
    for round_ in range(rounds + 1):            # round 0 warms up every runtime
        for label, model in models.items():
            for b, inputs in batches.items():
                with torch.inference_mode():
                    t0 = time.perf_counter()
                    model(*inputs)
                    elapsed = time.perf_counter() - t0
                if round_:
                    forward_s[label][b].append(elapsed)
            elapsed = generate(pipes[label])
            if round_:
                generate_s[label].append(elapsed)
    with torch.inference_mode():
        eps = {label: model(*batches[8]) for label, model in models.items()}
        images = {label: to_uint8(p.generate(jobs, steps=steps, sampler=sampler).images).astype(np.int16)
                  for label, p in pipes.items()}
    reference = Runtime().label
    rows = {}
    for label, model in models.items():
        rows[label] = {**{f"forward_ms_b{b}": min(forward_s[label][b]) * 1000 for b in RUNTIME_BATCHES},
                       "generate_4_s": min(generate_s[label]), "load_s": load_s[label],
                       "max_eps_diff": float((eps[label] - eps[reference]).abs().max()),
                       "max_pixel_diff": int(abs(images[label] - images[reference]).max()),
                       "exact": runtime_of(model).exact}
    fastest_exact = min((label for label in rows if rows[label]["exact"]), key=lambda k: rows[k]["generate_4_s"])
    return {"runtimes": rows, "runtime_default": Runtime(DEFAULT_RUNTIME).label,
            "runtime_fastest_exact": fastest_exact, "runtime_rounds": rounds, "runtimes_refused": refused}


def runtime_table(result: dict, fmt: Callable[[object], str]) -> str:
    columns = [*(f"forward_ms_b{b}" for b in RUNTIME_BATCHES), "generate_4_s", "max_eps_diff", "max_pixel_diff"]
    rows = [("runtime", *columns, "")]
    for label, row in result["runtimes"].items():
        notes = [n for n, yes in (("default", label == result["runtime_default"]),
                                  ("fastest exact", label == result["runtime_fastest_exact"]),
                                  ("changes pixels", not row["exact"])) if yes]
        rows.append((label, *(fmt(row[c]) for c in columns), ", ".join(notes)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines += [f"{label}: refused at load: {why}" for label, why in result.get("runtimes_refused", {}).items()]
    return f"U-Net runtimes (minimum of {result['runtime_rounds']} interleaved rounds):\n" + "\n".join(lines)
