"""python benchmarks/serve_overhead.py: where the time of one generation goes, local against a Ray Serve replica.

    python benchmarks/serve_overhead.py                        # the shipped models, 2 replicas, 5 requests each way
    python benchmarks/serve_overhead.py --batch-wait-ms 0 --requests 10

One request at a time (no batch mates), 4 images at the app's default sampler and steps, timed in this process:
  local      pipeline.run to the last step (CLIP encoding included)
  ray        RaySamplerBackend.run to the last step, as the app calls it (CLIP encoding on the front included)
  replica    the replica's own time for the request (first step asked -> last step yielded)
  forwards   the replica's time inside U-Net forwards (with the hop to its worker thread)
so ray - replica is routing, streaming and pickling between front and replica (and the front's CLIP encoding),
and replica - forwards is the batch wait (--batch-wait-ms per step when nobody else is sampling), the sampler's
own steps and the replica's event loop. Medians over --requests, after one warm-up each way. A busy machine makes
these figures noise: run it on a quiet one.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--unet", default=None)
    parser.add_argument("--clip", default="default")
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--batch-wait-ms", type=float, default=10.0)
    parser.add_argument("--requests", type=int, default=5)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)

    from clipdiff.checkpoints import DEFAULT_UNET_DIR
    from clipdiff.pipeline import DEFAULT_SAMPLER, DEFAULT_STEPS, ClipDiffusionPipeline, images_per_prompt
    from clipdiff.serving.options import SamplerOptions
    from clipdiff.serving.ray_sampler import start_local

    unet = args.unet or str(DEFAULT_UNET_DIR)
    pipe = ClipDiffusionPipeline.load(unet, clip=args.clip, device="cpu")
    backend = start_local(pipe, unet, SamplerOptions(replicas=args.replicas, batch_wait_s=args.batch_wait_ms / 1000))
    try:
        def timed(run) -> float:
            t0 = time.perf_counter()
            for _ in run:
                pass
            return time.perf_counter() - t0

        figures = {"local_s": [], "ray_s": [], "replica_s": [], "forwards_s": []}
        for k in range(args.requests + 1):
            jobs = images_per_prompt(["A deep red rose flower"], 2.0, 100 + k, 4)
            run = pipe.prepare(jobs, DEFAULT_STEPS, DEFAULT_SAMPLER)      # both time sampling alone
            local = timed(pipe.sample(run))
            before = {s["replica"]: (s["forward_s"], len(s["recent"])) for s in backend.stats()}
            ray = timed(backend.run(pipe, run))
            after = backend.stats()
            served = [s for s in after if len(s["recent"]) > before[s["replica"]][1] or
                      s["forward_s"] > before[s["replica"]][0]][0]
            if k == 0:
                continue                                 # warm-up
            figures["local_s"].append(local)
            figures["ray_s"].append(ray)
            figures["replica_s"].append(served["recent"][-1]["seconds"])
            figures["forwards_s"].append(served["forward_s"] - before[served["replica"]][0])
        report = {name: round(statistics.median(v), 4) for name, v in figures.items()}
        report.update({"front_to_replica_s": round(report["ray_s"] - report["replica_s"], 4),
                       "replica_besides_forwards_s": round(report["replica_s"] - report["forwards_s"], 4),
                       "steps": DEFAULT_STEPS, "sampler": DEFAULT_SAMPLER, "images": 4, "replicas": args.replicas,
                       "batch_wait_ms": args.batch_wait_ms, "requests": args.requests})
    finally:
        backend.close()
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
