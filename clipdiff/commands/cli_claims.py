"""python -m clipdiff claims: re-measure every claim the texts make about the shipped models, rewrite
checkpoints/claims.json, and say which document lines no longer hold.

    python -m clipdiff claims                     # after retraining: then fix the lines it lists, run the tests
    python -m clipdiff claims --check             # measure nothing: are the file's models the shipped ones?

The tour and the info texts are rendered from the file, so they follow it; the README and the model card quote
it, and tests/test_claims.py fails on any line that no longer reads as its template renders.
"""
from __future__ import annotations

import argparse
import time

from .. import claims
from ..checkpoints import DEFAULT_CLIP_DIR, read_json


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="clipdiff claims", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=claims.SEEDS, help=f"seeds per sampled figure "
                                                                         f"(default {claims.SEEDS})")
    parser.add_argument("--check", action="store_true", help="only compare the file with the shipped models "
                                                             "and the documents")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)
    if not 2 <= args.seeds <= 64:
        parser.error("--seeds must be between 2 and 64")
    if not args.check:
        from ..atlas import Atlas
        from ..pipeline import ClipDiffusionPipeline

        start = time.perf_counter()
        pipe = ClipDiffusionPipeline.load(device=args.device)
        measured = claims.measure(pipe, Atlas.load(), read_json(DEFAULT_CLIP_DIR / "eval.json"), args.seeds)
        claims.write(measured)
        print(f"measured {len(measured['figures'])} figures over {args.seeds} seeds in "
              f"{time.perf_counter() - start:.0f} s -> {claims.CLAIMS_PATH}")
    problems = claims.stale_models() + claims.stale_texts()
    for line in problems:
        print(f"no longer holds: {line}")
    if not problems:
        print("every document line agrees with the measured claims, on the shipped models")
    return 1 if problems else 0
