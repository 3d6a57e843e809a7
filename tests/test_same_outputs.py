"""The app's API answers as pinned (tests/pins/): the same calls with the same seeds give the same pictures,
numbers, texts and endpoint signatures. The pins are recorded with

    CLIPDIFF_WRITE_PINS=1 python -m pytest tests/test_same_outputs.py

and must not be rewritten to make a change pass: a difference here is a change of behaviour for API clients; only a
deliberate, reviewed change of what the app answers is re-recorded.

Pictures (thumbnails inside figures too) are compared within two levels per channel and numbers within their printed
precision, so another CPU's floating-point rounding does not count as a change (one chaotic score aside: CHAOTIC).
What an old client cannot notice is not a change: a new endpoint, or a new input after a pinned endpoint's inputs
that has a default (positional calls still mean what they meant)."""
from __future__ import annotations

import base64
import io
import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

gradio_client = pytest.importorskip("gradio_client")
from gradio_client import Client, handle_file  # noqa: E402
from gradio_client.exceptions import AppError  # noqa: E402

from clipdiff.images import read_params  # noqa: E402

PINS = Path(__file__).parent / "pins"
WRITE = os.environ.get("CLIPDIFF_WRITE_PINS") == "1"
PROMPTS = ["A deep red rose flower", "A round white daisy with a yellow center"]
LONG = " ".join(["a white daisy with many long thin petals"] * 12)


class Recorder:
    """What the calls returned, reduced to what must not change: pictures as arrays, texts with paths and timings
    masked, numbers as numbers."""

    def __init__(self, clip_dir: Path):
        self.values: dict[str, object] = {}
        self.arrays: dict[str, np.ndarray] = {}
        self.clip_dir = str(clip_dir)

    def text(self, value: str) -> str:
        value = value.replace(self.clip_dir, "<clip>")
        value = re.sub(r"unet\d*-[0-9a-f]{10}", "<model>", value)
        value = re.sub(r"^value_\d+$", "value_<id>", value)      # an unlabelled component: named by its place
        return re.sub(r" in \d+\.\d s\.", " in <t> s.", value)

    def clean(self, value):
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {k: self.clean(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self.clean(v) for v in value]
        return value

    def picture(self, name: str, path) -> None:
        with Image.open(path) as im:
            self.arrays[name] = np.asarray(im.convert("RGB"))
            params = read_params(im)
        if params is not None:
            self.values[f"{name}.params"] = self.clean(params)

    def gallery(self, name: str, items: list[dict]) -> None:
        self.values[f"{name}.captions"] = [self.text(item["caption"] or "") for item in items]
        for k, item in enumerate(items):
            self.picture(f"{name}.{k}", item["image"])

    def gif(self, name: str, path) -> None:
        with Image.open(path) as im:
            frames = []
            for k in range(im.n_frames):
                im.seek(k)
                frames.append(np.asarray(im.convert("RGB")))
            self.values[f"{name}.durations"] = [im.info.get("duration")]
        self.arrays[name] = np.stack(frames)

    def plot(self, name: str, plot: dict) -> None:
        figure = json.loads(plot["plot"])
        figure["layout"].pop("template", None)   # plotly's own styling, not ours
        self.values[name] = arrays_as_lists(figure)

    def error(self, name: str, client: Client, *args, api_name: str) -> None:
        with pytest.raises(AppError) as e:
            client.predict(*args, api_name=api_name)
        self.values[name] = self.text(str(e.value))


def arrays_as_lists(value):
    """Plotly's packed arrays ({"bdata": base64, "dtype": ...}) as plain numbers, to compare within rounding."""
    if isinstance(value, dict) and "bdata" in value:
        array = np.frombuffer(base64.b64decode(value["bdata"]), dtype=value["dtype"])
        shape = value.get("shape", len(array))
        return array.reshape([int(n) for n in str(shape).split(",")]).tolist()
    if isinstance(value, dict):
        return {k: arrays_as_lists(v) for k, v in value.items()}
    if isinstance(value, list):
        return [arrays_as_lists(v) for v in value]
    return value


def record(client: Client, rec: Recorder, tmp_path: Path) -> None:
    api = client.view_api(return_format="dict", print_info=False)
    rec.values["api"] = {name: {"parameters": e["parameters"], "returns": e["returns"]}
                         for name, e in api["named_endpoints"].items()}
    rec.values["api.unnamed"] = sorted(api["unnamed_endpoints"])

    rec.values["tokens"] = rec.clean(client.predict(f"{PROMPTS[0]}\n{LONG}", api_name="/tokens"))

    job = client.submit("\n".join(PROMPTS), 1.5, 3, "ddim", 7, 2, api_name="/generate")
    updates = list(job)
    rec.values["generate.statuses"] = [rec.text(u[1]) for u in updates]
    rec.values["generate.seeds"] = [u[2] for u in updates]
    rec.picture("generate.preview", updates[0][0][0]["image"])
    gallery, _, _ = job.outputs()[-1]
    rec.gallery("generate", gallery)

    rec.gallery("rank", client.predict(api_name="/rank"))
    rec.gif("playback_gif", client.predict(1, api_name="/playback_gif"))
    rec.values["load_params"] = rec.clean(client.predict(handle_file(gallery[3]["image"]), api_name="/load_params"))

    grid, cells, status, seed = client.predict("\n".join(PROMPTS), "-1, 0, 2", 3, 2, "dpmsolver-karras",
                                               api_name="/sweep")
    rec.picture("sweep.grid", grid)
    rec.gallery("sweep", cells)
    rec.values["sweep.status"], rec.values["sweep.seed"] = rec.text(status), seed

    red = tmp_path / "red.png"
    Image.new("RGB", (40, 30), (200, 20, 20)).save(red)
    plot, matrices, nearest = client.predict("a red flower\na white flower\na sunflower", [handle_file(str(red))],
                                             True, "images", api_name="/similarity")
    rec.plot("similarity.plot", plot)
    rec.values["similarity.json"] = rec.clean(matrices)
    rec.values["similarity.nearest"] = rec.clean(nearest)

    plot, points = client.predict("umap-centered", "a red flower\nwhite petals", [handle_file(str(red))], True, True,
                                  api_name="/embed_map")
    rec.plot("embed_map.plot", plot)
    rec.values["embed_map.json"] = rec.clean(points)

    strip, status, seed = client.predict(PROMPTS[0], PROMPTS[1], 3, 1.0, 5, 2, "ddpm", api_name="/interpolate")
    rec.picture("interpolate.strip", strip)
    rec.values["interpolate.status"], rec.values["interpolate.seed"] = rec.text(status), seed

    strip, status, seed = client.predict(PROMPTS[0], PROMPTS[1], 0.3, 2.0, 9, 2, "dpmsolver", api_name="/mix")
    rec.picture("mix.strip", strip)
    rec.values["mix.status"], rec.values["mix.seed"] = rec.text(status), seed

    varied, seen, status, seed = client.predict(handle_file(str(red)), 2, 1.0, 5, 2, "ddim", api_name="/vary")
    rec.gallery("vary", varied)
    rec.picture("vary.seen", seen)
    rec.values["vary.status"], rec.values["vary.seed"] = rec.text(status), seed

    # values out of range are clamped and said; impossible ones refused in words
    clamped = client.predict("\n".join(f"flower {i}" for i in range(10)), 10, 400, "ddim", -3.7, 2,
                             api_name="/generate")
    rec.values["clamped.status"], rec.values["clamped.seed"] = rec.text(clamped[1]), clamped[2]
    rec.values["clamped.count"] = len(clamped[0])
    rec.values["sweep.clamped"] = rec.text(client.predict("a\nb\nc\nd\ne", "1e9 0 1 2 3 4 5 6 7 8 9", 1, 400, "ddim",
                                                          api_name="/sweep")[2])
    rec.error("error.slider", client, PROMPTS[0], 50, 5, "ddim", 1, 1, api_name="/generate")
    rec.error("error.empty", client, "", 2.0, 5, "ddim", 1, 1, api_name="/generate")
    rec.error("error.sampler", client, PROMPTS[0], 2.0, 5, "euler", 1, 1, api_name="/generate")
    rec.error("error.interpolate", client, "", PROMPTS[1], 3, 1.0, 5, 2, "ddim", api_name="/interpolate")
    rec.error("error.load_params", client, handle_file(str(red)), api_name="/load_params")


# -- comparing ------------------------------------------------------------------------------------------------
# The clamped run is 16 images at w = 10 over 100 steps: guidance that far out multiplies another CPU's rounding
# until which image scores best, and by how much, differs (AMD EPYC vs the Intel Xeon that recorded the pins: 45.7
# vs 42.6). What that call pins is its clamping and what it says about it, so its best score is not compared.
CHAOTIC = {"clamped.status": (r"Best CLIP score: [^\n]*?\)\. ", "Best CLIP score: <chaotic>. ")}
NUMBER = re.compile(r"-?\d+(?:\.(\d+))?(?:e[-+]?\d+)?")


def same_text(a: str, b: str) -> bool:
    """Equal but for the last printed digit of each decimal fraction (whole numbers: seeds, counts, exactly), and
    for the number Gradio gives an unlabelled component (it counts every component the process has made)."""
    a, b = (re.sub(r"^value_\d+$", "value_<id>", t) for t in (a, b))
    if NUMBER.sub("#", a) != NUMBER.sub("#", b):
        return False
    for x, y in zip(NUMBER.finditer(a), NUMBER.finditer(b)):
        places = len(x.group(1) or "")
        slack = 1.01 * 10 ** -places if places else 0
        if abs(float(x.group()) - float(y.group())) > slack:
            return False
    return True


PNG_URI = "data:image/png;base64,"


def data_uri_picture(uri: str) -> np.ndarray:
    """A thumbnail the API sends inside a figure, as pixels: compared like any picture, not byte for byte."""
    with Image.open(io.BytesIO(base64.b64decode(uri[len(PNG_URI):]))) as im:
        return np.asarray(im.convert("RGB"))


def differences(pinned, now, where: str = "") -> list[str]:
    if isinstance(pinned, dict) and isinstance(now, dict):
        if set(pinned) != set(now):
            return [f"{where}: keys {sorted(set(pinned) ^ set(now))} differ"]
        return [d for k in pinned for d in differences(pinned[k], now[k], f"{where}.{k}")]
    if isinstance(pinned, list) and isinstance(now, list):
        if len(pinned) != len(now):
            return [f"{where}: {len(pinned)} items pinned, {len(now)} now"]
        return [d for k, (p, n) in enumerate(zip(pinned, now)) for d in differences(p, n, f"{where}[{k}]")]
    if isinstance(pinned, float) or isinstance(now, float):
        ok = isinstance(now, (int, float)) and isinstance(pinned, (int, float)) and abs(pinned - now) <= 1e-3
        return [] if ok else [f"{where}: {pinned!r} pinned, {now!r} now"]
    if isinstance(pinned, str) and isinstance(now, str) and pinned.startswith(PNG_URI) and now.startswith(PNG_URI):
        return picture_differences({where: data_uri_picture(pinned)}, {where: data_uri_picture(now)})
    if isinstance(pinned, str) and isinstance(now, str):
        return [] if same_text(pinned, now) else [f"{where}: {pinned!r} pinned, {now!r} now"]
    return [] if pinned == now else [f"{where}: {pinned!r} pinned, {now!r} now"]


def api_differences(pinned: dict, now: dict) -> list[str]:
    """Every pinned endpoint answers as pinned: its inputs, then only inputs with defaults, and its outputs."""
    found = [f"{name}: gone" for name in pinned if name not in now]
    for name in set(pinned) & set(now):
        before, after = pinned[name]["parameters"], now[name]["parameters"]
        found += differences(before, after[:len(before)], f".api.{name}.parameters")
        found += [f"{name}: the new input {p['parameter_name']} has no default" for p in after[len(before):]
                  if not p["parameter_has_default"]]
        found += differences(pinned[name]["returns"], now[name]["returns"], f".api.{name}.returns")
    return found


def picture_differences(pinned: dict, now: dict) -> list[str]:
    found = [] if set(pinned) == set(now) else [f"pictures {sorted(set(pinned) ^ set(now))} differ"]
    for name in sorted(set(pinned) & set(now)):
        a, b = pinned[name].astype(int), now[name].astype(int)
        if a.shape != b.shape:
            found.append(f"{name}: shape {a.shape} pinned, {b.shape} now")
        elif np.count_nonzero(np.abs(a - b) > 2) > STRAY_SHARE * a.size:
            found.append(f"{name}: {np.count_nonzero(np.abs(a - b) > 2)} values differ by more than 2 levels")
    return found


# The share of a picture's values that may stray past 2 levels. The shared test app batches every run in flight into
# one U-Net forward (serving.batching), so which batch mates a run had, set by the tests before this one, picks the
# CPU kernels and with them the last float bits; a few pixels of a 20-step image and of the playback's heat maps
# (scaled by a percentile) then move by more than 2 levels (measured: at most 72 of 268,272 GIF values, 63 of 12,288
# in one image). A change of behaviour moves far more than 1% of a picture.
STRAY_SHARE = 0.01


def test_the_api_answers_as_pinned(live_app, tiny_clip_dir, tmp_path):
    client = Client(live_app.url, verbose=False)
    rec = Recorder(tiny_clip_dir)
    try:
        record(client, rec, tmp_path)
    finally:
        client.close()
    if WRITE:
        PINS.mkdir(exist_ok=True)
        (PINS / "api.json").write_text(json.dumps(rec.values, indent=1, ensure_ascii=False, sort_keys=True) + "\n")
        np.savez_compressed(PINS / "pictures.npz", **rec.arrays)
        pytest.skip("pins written")
    pinned_values = json.loads((PINS / "api.json").read_text())
    with np.load(PINS / "pictures.npz") as pinned_arrays:
        pinned_pictures = dict(pinned_arrays)
    now = json.loads(json.dumps(rec.values, ensure_ascii=False))    # tuples as lists, as pinned
    for values in (pinned_values, now):
        for key, (pattern, mask) in CHAOTIC.items():
            values[key] = re.sub(pattern, mask, values[key])
    found = api_differences(pinned_values.pop("api"), now.pop("api")) + differences(pinned_values, now) + \
        picture_differences(pinned_pictures, rec.arrays)
    assert found == [], "\n".join(f[:300] for f in found[:20])
