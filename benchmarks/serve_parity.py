"""python benchmarks/serve_parity.py: the same requests to `app.py --backend local` and `app.py --backend ray`, their
PNGs compared pixel by pixel.

    python benchmarks/serve_parity.py                        # the shipped models, 2 replicas
    python benchmarks/serve_parity.py --replicas 3 --app-args "--unet DIR --clip DIR"

Every sampling endpoint with fixed seeds: /generate (and its playback GIF), /sweep, /interpolate, /vary. Prints, per
endpoint, the largest difference in uint8 levels and how many images were compared, and the seconds each app took
to answer after start; exits 1 when any PNG differs by more than one level (the tolerance tests/test_serve.py
states and explains) or an endpoint fails. The playback GIF is compared by its frame count and mean difference only:
GIF frames are quantized to an adaptive 256-colour palette, so a one-level change in a frame can move the palette
and, with it, whole regions by many levels. Needs requirements-serve.txt.
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from clipdiff.commands.room import start_app, stop_app  # noqa: E402

PROMPTS = "A deep red rose flower\nAn orange sunflower with a big brown center"
MAX_LEVELS = 1


def pixels(path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB")).astype(int)


def answers(url: str, picture: str) -> dict[str, list[np.ndarray]]:
    """Every sampling endpoint once, fixed seeds, the app's default sampler and steps where it has them."""
    from gradio_client import Client, handle_file

    client = Client(url, verbose=False)
    try:
        gallery, status, _ = client.predict(PROMPTS, 2.0, 12, "dpmsolver-karras", 7, 2, api_name="/generate")
        gif = client.predict(0, api_name="/playback_gif")
        with Image.open(gif) as im:
            frames = []
            for k in range(im.n_frames):
                im.seek(k)
                frames.append(np.asarray(im.convert("RGB")).astype(int))
        grid, sweep_gallery, _, _ = client.predict(PROMPTS, "-1, 0, 2", 3, 12, "dpmsolver-karras", api_name="/sweep")
        strip, _, _ = client.predict("A deep red rose flower", "A round white daisy with a yellow center", 4, 2.0, 5,
                                     12, "dpmsolver-karras", api_name="/interpolate")
        variations, _, _, _ = client.predict(handle_file(picture), 3, 2.0, 9, 12, "dpmsolver-karras",
                                             api_name="/vary")
        negative, _, _ = client.predict(PROMPTS, 2.0, 12, "dpmsolver-karras", 7, 1, "red", api_name="/generate")
        _, switched, _, _ = client.predict("A round white daisy with a yellow center", "An orange sunflower",
                                           "0, 0.3, 1", 7, 2.0, 12, "dpmsolver-karras", api_name="/prompt_edit")
        _, ablated, _, _, _ = client.predict("a red rose", 7, 2.0, 12, "dpmsolver-karras", api_name="/word_importance")
    finally:
        client.close()
    if "Done" not in status:
        raise RuntimeError(f"/generate: {status[:200]}")
    return {"/generate": [pixels(g["image"]) for g in gallery], "playback gif": frames,
            "/sweep": [pixels(g["image"]) for g in sweep_gallery] + [pixels(grid)], "/interpolate": [pixels(strip)],
            "/vary": [pixels(v["image"]) for v in variations],
            "/generate, negative": [pixels(g["image"]) for g in negative],
            "/prompt_edit": [pixels(g["image"]) for g in switched], "/word_importance": [pixels(ablated)]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--app-args", default="", help="more app.py flags for both apps")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    extra = shlex.split(args.app_args)
    with tempfile.TemporaryDirectory() as tmp:
        picture = str(Path(tmp) / "red.png")
        Image.new("RGB", (64, 48), (200, 30, 40)).save(picture)
        got, started = {}, {}
        for backend in ("local", "ray"):
            t0 = time.perf_counter()
            process, url = start_app(backend, args.replicas, extra)
            started[backend] = round(time.perf_counter() - t0, 1)
            try:
                got[backend] = answers(url, picture)
            finally:
                stop_app(process)
    report, worst = {"replicas": args.replicas, "seconds_to_answer": started, "endpoints": {}}, 0
    for endpoint, local in got["local"].items():
        served = got["ray"][endpoint]
        if len(served) != len(local) or any(a.shape != b.shape for a, b in zip(served, local)):
            raise RuntimeError(f"{endpoint}: {len(served)} pictures through ray, {len(local)} locally")
        levels = max(int(np.abs(a - b).max()) for a, b in zip(served, local))
        report["endpoints"][endpoint] = {"pictures": len(local), "max_levels": levels,
                                         "mean_levels": round(float(np.mean([np.abs(a - b).mean()
                                                                             for a, b in zip(served, local)])), 4),
                                         "identical": all(np.array_equal(a, b) for a, b in zip(served, local))}
        if endpoint != "playback gif":         # palette-quantized: see the docstring
            worst = max(worst, levels)
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0 if worst <= MAX_LEVELS else 1


if __name__ == "__main__":
    sys.exit(main())
