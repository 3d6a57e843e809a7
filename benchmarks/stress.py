"""python benchmarks/stress.py: the long hardening runs of issue 6 against a live app, with their figures.

    python benchmarks/stress.py                                  # tiny random models (as the tests), 127.0.0.1 only
    python benchmarks/stress.py --unet DIR --clip DIR --atlas DIR # real models
    python benchmarks/stress.py --only fuzz load --fuzz-cases 2000

Runs, each bounded and stopping by itself: fuzz (hypothesis drives every endpoint through gradio_client),
load (16 clients x 10 requests), cancel (a cancelled run stops within a sampler step, the next starts at once),
memory (RSS growth over 300 generations), queue-full (extra requests get "Queue is full! Please try again.").
The runs are clipdiff.testing.stress's; tests/test_hardening.py runs short ones in the suite.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from clipdiff.app.limits import QUEUE_SIZE  # noqa: E402
from clipdiff.testing import make_tiny_clip, make_tiny_unet, write_tiny_atlas  # noqa: E402
from clipdiff.testing.live import AppProcess, unhandled_in_log  # noqa: E402
from clipdiff.testing.stress import cancel, fuzz, load, memory, queue_full  # noqa: E402


def tiny_models(folder: Path) -> tuple[str, str, str]:
    """The tests' tiny random CLIP, U-Net and atlas."""
    from clipdiff.encoders import ClipEncoder

    clip = make_tiny_clip(folder / "clip")
    unet = make_tiny_unet(folder / "unet", f"local-dir:{clip}")
    atlas = write_tiny_atlas(folder / "atlas", ClipEncoder.load(str(clip), None, "cpu"))
    return str(unet), str(clip), str(atlas)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--unet"), parser.add_argument("--clip"), parser.add_argument("--atlas")
    parser.add_argument("--only", nargs="+", default=["fuzz", "load", "cancel", "memory", "queue"],
                        choices=["fuzz", "load", "cancel", "memory", "queue"])
    parser.add_argument("--fuzz-cases", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--requests", type=int, default=10)
    parser.add_argument("--generations", type=int, default=300)
    parser.add_argument("--max-queue", type=int, default=QUEUE_SIZE, help="as app.py's --max-queue")
    parser.add_argument("--json", type=Path, help="write the figures here too")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="clipdiff-stress-"))
    unet, clip, atlas = (args.unet, args.clip, args.atlas) if args.unet else tiny_models(work)
    figures = {}
    app = AppProcess(unet, clip or "default", atlas or str(work / "no-atlas"), "cpu", work,
                     extra_args=("--max-queue", str(args.max_queue)))
    with app:
        log_seen = [0]

        def unhandled():
            return unhandled_in_log(app.log_tail(10**9)[log_seen[0]:])

        for name in args.only:
            t0 = time.perf_counter()
            try:
                if name == "fuzz":
                    figures[name] = fuzz(app.url, args.fuzz_cases, unhandled, seed=None, tmp=work)
                elif name == "load":
                    figures[name] = load(app.url, args.clients, args.requests)
                elif name == "cancel":
                    figures[name] = cancel(app.url)
                elif name == "memory":
                    figures[name] = memory(app.url, app.proc.pid, args.generations)
                elif name == "queue":
                    figures[name] = queue_full(app.url, args.max_queue)
            except Exception as e:  # noqa: BLE001 - one failed run is a figure, the others still run
                figures[name] = {"failed": f"{type(e).__name__}: {str(e)[:500]}"}
            figures[name]["unhandled_server_errors"] = unhandled()
            log_seen[0] = len(app.log_tail(10**9))
            print(f"{name} ({time.perf_counter() - t0:.0f} s): {json.dumps(figures[name], ensure_ascii=False)}",
                  flush=True)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2, ensure_ascii=False))
    return 1 if any("failed" in f or f["unhandled_server_errors"] for f in figures.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
