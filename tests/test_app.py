"""The app end to end through gradio_client, on a launched server with tiny random models; and the core
helpers behind it (playback, interpolation)."""
from __future__ import annotations

import json
import math
import socket
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

gradio_client = pytest.importorskip("gradio_client")
from gradio_client import Client, handle_file  # noqa: E402
from gradio_client.exceptions import AppError  # noqa: E402

from clipdiff.images import read_params  # noqa: E402
from clipdiff.interpolate import mix, slerp, slerp_path  # noqa: E402
from clipdiff.playback import export_gif, make_playback  # noqa: E402
from clipdiff.similarity import unit  # noqa: E402

PROMPTS = ["A deep red rose flower", "A round white daisy with a yellow center"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_tiny_atlas(folder: Path, encoder, n_images: int = 24) -> Path:
    """An atlas in the shipped format, from the tiny CLIP's real embeddings of coloured squares. Its 2-D
    views are PCA for all three methods: fitting UMAP would cost ~20 s of numba compiling per test run."""
    from safetensors.numpy import save_file

    from clipdiff.atlas import ARRAYS, META, METHODS

    rng = np.random.default_rng(0)
    labels = np.arange(n_images) % 3
    colours = np.array([[200, 30, 40], [240, 230, 230], [240, 180, 30]])
    pixels = np.clip(colours[labels][:, None, None, :] + rng.normal(0, 20, (n_images, 32, 32, 3)), 0, 255)
    images = [Image.fromarray(p.astype(np.uint8)) for p in pixels]
    class_names = ["rose", "daisy", "sunflower"]
    texts = [f"a photo of a {c}, a type of flower" for c in class_names] + ["a red flower", "white petals"]
    image_emb = encoder.encode_image(images).numpy()
    text_emb = encoder.encode_text(texts).numpy()
    raw = np.concatenate([unit(image_emb).numpy(), unit(text_emb).numpy()])
    mean = raw.mean(0)
    _, _, vt = np.linalg.svd(raw - mean, full_matrices=False)
    coords = ((raw - mean) @ vt[:2].T).astype(np.float32)
    arrays = {"image_emb": image_emb.astype(np.float16), "text_emb": text_emb.astype(np.float16),
              "labels": labels.astype(np.int32), "text_labels": np.array([0, 1, 2, -1, -1], dtype=np.int32),
              "image_mean": unit(image_emb).numpy().mean(0), "text_mean": unit(text_emb).numpy().mean(0),
              "pca_mean": mean.astype(np.float32), "pca_components": vt[:2].astype(np.float32)}
    arrays.update({f"coords_{m}": coords for m in METHODS})
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: np.ascontiguousarray(v) for k, v in arrays.items()}, str(folder / ARRAYS))
    (folder / META).write_text(json.dumps({"clip_identity": encoder.identity, "class_names": class_names,
                                           "sources": [f"img{i}.jpg" for i in range(n_images)],
                                           "texts": texts, "methods": list(METHODS)}))
    return folder


@pytest.fixture(scope="session")
def tiny_atlas_dir(tmp_path_factory, tiny_pipeline):
    return write_tiny_atlas(tmp_path_factory.mktemp("atlas"), tiny_pipeline.encoder)


def start_app(clip_dir: Path, unet_dir: Path, atlas_dir: Path):
    """The real app on a free local port, tiny models, one model run at a time (as on a 2-core laptop), a
    preview after every step (the app's own throttle would make the count depend on the machine's speed)."""
    from clipdiff.ui import Models, build_app, serve

    models = Models.load(unet_dir, str(clip_dir), None, atlas_dir, "cpu")
    assert models.problems == []
    demo = build_app(models, concurrency=1, preview_every_s=0)
    port = free_port()
    serve(demo, port=port, concurrency=1, max_queue=8, prevent_thread_lock=True, quiet=True)
    return demo, f"http://127.0.0.1:{port}/"


@pytest.fixture(scope="module")
def app_url(tiny_clip_dir, tiny_unet_dir, tiny_atlas_dir):
    demo, url = start_app(tiny_clip_dir, tiny_unet_dir, tiny_atlas_dir)
    yield url
    demo.close()


@pytest.fixture
def client(app_url):
    c = Client(app_url, verbose=False)
    yield c
    c.close()


def image_file(tmp_path: Path, name: str, colour, mode="RGB", size=(40, 30)) -> str:
    path = tmp_path / name
    Image.new(mode, size, colour).save(path)
    return str(path)


# -- the app through its API -----------------------------------------------------------------------------------
def test_generate_streams_previews_then_final_pngs_with_parameters(client):
    job = client.submit("\n".join(PROMPTS), 2.0, 5, "ddim", 7, 2, api_name="/generate")
    updates = list(job)
    previews = [u for u in updates if "Sampling: step" in u[1]]
    assert len(previews) == 4 and len(updates) == 5, "a preview after each step, the last step gives the PNGs"
    first_gallery, first_status, _ = updates[0]
    assert "step 1 of 5" in first_status and len(first_gallery) == 1, "a preview is one picture of all images"
    width, height = Image.open(first_gallery[0]["image"]).size
    assert width == 4 * height + 3 * 2, "the 4 images side by side, 2 px apart"
    gallery, status, seed_used = job.outputs()[-1]
    assert "Done" in status and seed_used == 7
    assert len(gallery) == 4
    params = [read_params(item["image"]) for item in gallery]
    assert [p["prompt"] for p in params] == [PROMPTS[0], PROMPTS[0], PROMPTS[1], PROMPTS[1]]
    assert [p["seed"] for p in params] == [7, 8, 7, 8]
    assert params[0]["w"] == 2.0 and params[0]["steps"] == 5 and params[0]["sampler"] == "ddim"
    assert "CLIP score" in gallery[0]["caption"]

    # the same session can export its run as a GIF, one frame per recorded step
    gif = client.predict(0, api_name="/playback_gif")
    with Image.open(gif) as im:
        assert im.n_frames == 5

    # a PNG from the gallery loads its parameters back into the controls
    prompt, w, steps, sampler, seed, _ = client.predict(handle_file(gallery[3]["image"]), api_name="/load_params")
    assert (prompt, w, steps, sampler, seed) == (PROMPTS[1], 2.0, 5, "ddim", 8)


def test_same_seed_same_image_and_seed_shown_is_seed_used(client):
    a = client.predict(PROMPTS[0], 1.0, 3, "dpmsolver", 11, 1, api_name="/generate")
    b = client.predict(PROMPTS[0], 1.0, 3, "dpmsolver", 11, 1, api_name="/generate")
    assert np.array_equal(np.asarray(Image.open(a[0][0]["image"])), np.asarray(Image.open(b[0][0]["image"])))
    random_run = client.predict(PROMPTS[0], 1.0, 2, "ddim", None, 1, api_name="/generate")
    assert read_params(random_run[0][0]["image"])["seed"] == random_run[2]


def test_sweep_returns_prompts_times_w_images(client):
    grid, gallery, status, seed = client.predict("\n".join(PROMPTS), "-1, 0, 2", 3, 3, "ddim", api_name="/sweep")
    assert len(gallery) == 2 * 3 and "2 prompt(s) x 3 w value(s)" in status and seed == 3
    ws = [read_params(item["image"])["w"] for item in gallery]
    assert ws == [-1.0, -1.0, 0.0, 0.0, 2.0, 2.0], "rows are w, columns prompts"
    assert {read_params(item["image"])["seed"] for item in gallery} == {3}
    assert Image.open(grid).size[1] > 3 * 32


def test_similarity_returns_texts_by_images_matrices(client, tmp_path):
    files = [handle_file(image_file(tmp_path, "red.png", (200, 20, 20))),
             handle_file(image_file(tmp_path, "grey.png", 128, mode="L"))]
    texts = "a red flower\na white flower\na sunflower"
    _, result, nearest = client.predict(texts, files, False, "texts", api_name="/similarity")
    cosine, softmax = np.array(result["cosine"]), np.array(result["softmax"])
    assert cosine.shape == (3, 2) and softmax.shape == (3, 2)
    assert np.allclose(softmax.sum(0), 1, atol=1e-5), "softmax over texts: each image's column sums to 1"
    assert np.all(np.abs(cosine) <= 1 + 1e-5)
    assert len(nearest["data"]) == 2 * 5, "five nearest atlas captions per image"


def test_embed_map_places_prompts_and_images(client, tmp_path):
    plot, result = client.predict("umap-centered", "a red flower\nwhite petals",
                                  [handle_file(image_file(tmp_path, "red.png", (200, 20, 20)))], False, True,
                                  api_name="/embed_map")
    points = result["points"]
    assert [p["modality"] for p in points] == ["text", "text", "image"]
    assert all(math.isfinite(p["x"]) and math.isfinite(p["y"]) for p in points)
    assert result["method"] == "umap-centered"


def test_interpolate_and_vary(client, tmp_path):
    strip, status, seed = client.predict(PROMPTS[0], PROMPTS[1], 3, 1.0, 5, 2, "ddim", api_name="/interpolate")
    assert "Done" in status and Image.open(strip).width > 3 * 32
    gallery, seen, status, _ = client.predict(handle_file(image_file(tmp_path, "rgba.png", (0, 200, 0, 128),
                                                                     mode="RGBA")),
                                              2, 1.0, 5, 2, "ddim", api_name="/vary")
    assert len(gallery) == 2 and read_params(gallery[0]["image"])["conditioned_on"] == "embedding"


def test_cancelled_generation_stops_and_frees_the_worker(client, app_url):
    """With one model worker, a follow-up request can only start once the cancelled run has let go."""
    long = client.submit(PROMPTS[0], 2.0, 400, "ddim", 1, 4, api_name="/generate")
    started = time.monotonic()
    while len(long.outputs()) < 3:
        assert not long.done() and time.monotonic() - started < 60, "no previews from the long run"
        time.sleep(0.02)
    per_step = (time.monotonic() - started) / len(long.outputs())
    long.cancel()
    t0 = time.monotonic()
    other = Client(app_url, verbose=False)
    gallery, status, _ = other.predict(PROMPTS[0], 2.0, 2, "ddim", 1, 1, api_name="/generate")
    other.close()
    waited = time.monotonic() - t0
    assert "Done" in status
    remaining = per_step * (400 - 3)
    assert waited < remaining / 2, f"follow-up took {waited:.1f} s; the cancelled run had ~{remaining:.1f} s left"
    time.sleep(0.5)
    assert len(long.outputs()) < 400, "the cancelled run kept streaming"


@pytest.mark.parametrize("args, message", [
    (("", 2.0, 5, "ddim", 1, 1), "Type at least one prompt"),
    (("   \n\t\n", 2.0, 5, "ddim", 1, 1), "Type at least one prompt"),
    (("x" * 10_001, 2.0, 5, "ddim", 1, 1), "the limit is 10,000"),
    ((PROMPTS[0], 2.0, 10**9, "ddim", 1, 1), "greater than maximum"),
    ((PROMPTS[0], -1e9, 5, "ddim", 1, 1), "less than minimum"),
    ((PROMPTS[0], 2.0, 5, "ddim", 1, -3), "less than minimum"),
    ((PROMPTS[0], 2.0, 5, "ddim", "not a number", 1), "Expected a `float"),
    ((PROMPTS[0], 2.0, 5, "no-such-sampler", 1, 1), "no-such-sampler"),
])
def test_bad_values_get_a_clear_error_and_the_app_still_answers(client, args, message):
    with pytest.raises(AppError, match=message):
        client.predict(*args, api_name="/generate")
    gallery, status, _ = client.predict(PROMPTS[0], 2.0, 2, "ddim", 1, 1, api_name="/generate")
    assert "Done" in status


def test_out_of_range_values_are_clamped_and_said(client):
    prompts = "\n".join(f"flower {i}" for i in range(20)) + "\n\x07bell\u202eright-to-left 🌹"
    gallery, status, seed = client.predict(prompts, 2.0, 2, "ddim", -3.7, 8, api_name="/generate")
    assert len(gallery) == 16, "prompts capped at 8, images at 16 a run"
    assert "using the first 8" in status and "At most 16 images" in status and "seed -4" in status
    assert seed == 0 and read_params(gallery[0]["image"])["seed"] == 0


def test_checked_rejects_what_json_clients_cannot_even_send():
    """NaN and inf never leave gradio_client (httpx refuses them), but a raw HTTP request can carry them."""
    import gradio as gr

    from clipdiff.ui import Checked

    checked = Checked()
    for bad in (float("nan"), float("inf"), -float("inf"), "abc", True, [1], {"a": 1}):
        with pytest.raises(gr.Error):
            checked.number(bad, "w", -10, 10)
    assert checked.number("3", "steps", 1, 400, integer=True) == 3
    assert checked.number(1e300, "w", -10, 10) == 10 and checked.notes
    with pytest.raises(gr.Error):
        checked.lines(12, 8)
    with pytest.raises(gr.Error):
        checked.choice(None, ("ddim",), "sampler")
    assert checked.ws("-2, -1 0,0, 1e9") == [-2.0, -1.0, 0.0, 10.0]
    assert checked.budget(400, 8) == 200 and "using 200 steps" in checked.notes[-1], "one run's work is capped"
    assert checked.budget(20, 21) == 20


def test_bad_uploads_get_a_clear_error(client, tmp_path):
    text = tmp_path / "not-an-image.png"
    text.write_text("hello")
    with pytest.raises(AppError, match="not a readable image"):
        client.predict("a rose", [handle_file(str(text))], False, "texts", api_name="/similarity")
    with pytest.raises(AppError, match="no clipdiff parameters"):
        client.predict(handle_file(image_file(tmp_path, "plain.png", (1, 2, 3))), api_name="/load_params")


def uploads(tmp_path: Path) -> dict[str, Path]:
    """Pictures in the awkward formats people really upload."""
    files = {}
    for name, mode, colour in (("grey", "L", 90), ("rgba", "RGBA", (10, 200, 10, 0)), ("cmyk", "CMYK", (0, 255, 0, 0)),
                               ("palette", "P", 3), ("sixteen-bit", "I;16", 4000), ("one-pixel", "RGB", (1, 2, 3))):
        size = (1, 1) if name == "one-pixel" else (20, 12)
        files[name] = tmp_path / f"{name}.{'jpg' if mode == 'CMYK' else 'png'}"
        Image.new(mode, size, colour).save(files[name])
    frames = [Image.new("RGB", (16, 16), c) for c in ("red", "blue")]
    files["animated"] = tmp_path / "animated.gif"
    frames[0].save(files["animated"], save_all=True, append_images=frames[1:])
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: rotate 90 degrees to show
    files["exif-rotated"] = tmp_path / "exif.jpg"
    Image.new("RGB", (30, 10), "white").save(files["exif-rotated"], exif=exif)
    whole = tmp_path / "whole.png"
    Image.new("RGB", (64, 64), "red").save(whole)
    files["truncated"] = tmp_path / "truncated.png"
    files["truncated"].write_bytes(whole.read_bytes()[:60])
    return files


def test_awkward_uploads_open_upright_as_rgb_or_fail_clearly(tmp_path):
    import gradio as gr

    from clipdiff.ui import open_upload

    files = uploads(tmp_path)
    for name in ("grey", "rgba", "cmyk", "palette", "sixteen-bit", "one-pixel", "animated", "exif-rotated"):
        im = open_upload(str(files[name]), name)
        assert im.mode == "RGB", name
    assert open_upload(str(files["exif-rotated"])).size == (10, 30)
    assert open_upload(str(files["rgba"])).getpixel((0, 0)) == (255, 255, 255), "transparent becomes white"
    with pytest.raises(gr.Error, match="not a readable image"):
        open_upload(str(files["truncated"]))
    with pytest.raises(gr.Error, match="expected an uploaded image"):
        open_upload(12)


def test_missing_checkpoints_still_build_an_app_that_says_what_is_missing(tmp_path):
    from clipdiff.ui import Models, build_app

    models = Models.load(tmp_path / "no-unet", str(tmp_path / "no-clip"), None, tmp_path / "no-atlas", "cpu")
    assert models.pipeline is None and models.atlas is None and len(models.problems) == 2
    assert all("python -m clipdiff train-default" in p for p in models.problems)
    assert "Something is missing" in models.status_markdown()
    build_app(models)


# -- the core helpers behind the app ---------------------------------------------------------------------------
def test_slerp_keeps_the_ends_and_turns_at_a_constant_rate():
    torch.manual_seed(0)
    a, b = torch.randn(32) * 3, torch.randn(32) * 5
    fractions, path = slerp_path(a, b, 5)
    assert fractions == [0, 0.25, 0.5, 0.75, 1]
    assert torch.allclose(path[0], a, atol=1e-5) and torch.allclose(path[-1], b, atol=1e-5)
    angles = [float(torch.arccos((unit(path[i]) * unit(path[i + 1])).sum().clamp(-1, 1))) for i in range(4)]
    assert max(angles) - min(angles) < 1e-4
    assert torch.allclose(path.norm(dim=1), torch.linspace(float(a.norm()), float(b.norm()), 5), atol=1e-4)
    assert torch.allclose(slerp(a, a * 2, 0.5), a * 1.5, atol=1e-4), "same direction: no 0/0"
    assert torch.allclose(unit(mix(a, b, 1.0)), unit(b), atol=1e-6)


def test_previews_are_throttled_and_the_final_images_always_come(tiny_pipeline):
    from clipdiff.pipeline import images_per_prompt
    from clipdiff.ui import preview_grid, sample_stream

    jobs = images_per_prompt(PROMPTS, 2.0, 0, 3)
    every = [e[:2] for e in sample_stream(tiny_pipeline, jobs, 5, "ddim", record=True, preview_every_s=0)]
    assert every == [("step", 1), ("step", 2), ("step", 3), ("step", 4), ("done", every[-1][1])]
    events = list(sample_stream(tiny_pipeline, jobs, 5, "ddim", record=True, preview_every_s=1e9))
    assert [e[0] for e in events] == ["step", "done"] and events[0][1] == 1, "only the first step's preview"
    _, frames, records = events[-1]
    assert frames.shape == (6, 16, 16, 3) and len(records) == 5, "every step still recorded for playback"
    grid = preview_grid(frames, scale=2)
    assert grid.shape == (2 * 32 + 2, 4 * 32 + 3 * 2, 3), "6 images in rows of 4, each twice its size"
    assert np.array_equal(grid[34:66, :32], frames[4].repeat(2, 0).repeat(2, 1))


def test_playback_reads_recorded_frames_and_exports_a_gif(tiny_pipeline, tmp_path):
    from clipdiff.pipeline import images_per_prompt

    jobs = images_per_prompt(PROMPTS, 2.0, 0, 1)
    result = tiny_pipeline.generate(jobs, steps=4, sampler="ddim", record_every=1)
    run = make_playback(tiny_pipeline.encoder, PROMPTS, result.records, tiny_pipeline.conditions(jobs))
    assert run.cosines.shape == (4, 2) and np.all(np.abs(run.cosines) <= 1 + 1e-5)
    assert run.timesteps == sorted(run.timesteps, reverse=True)
    norms = run.noise_norms(1)
    assert set(norms) == {"conditional", "unconditional", "guided"} and norms["guided"].shape == (4,)
    first, last = run.frame(0, 0), run.frame(3, 0)
    assert first.size == last.size and first.tobytes() != last.tobytes()
    with Image.open(export_gif(run, 1, tmp_path / "run.gif")) as gif:
        assert gif.n_frames == 4
    run.release()
    assert run.records == [] and run.nbytes == 0

    # the app prepares the same cosines only once the final images are out (LastRun.playback_with_cosines)
    from clipdiff.playback import PlaybackRun
    from clipdiff.ui import LastRun

    last = LastRun(result.images, PROMPTS, [{}, {}], [0.0, 0.0], PlaybackRun(PROMPTS, list(result.records)),
                   tiny_pipeline.conditions(jobs))
    assert last.playback.cosines is None
    again = make_playback(tiny_pipeline.encoder, PROMPTS, result.records, tiny_pipeline.conditions(jobs))
    assert np.allclose(last.playback_with_cosines(tiny_pipeline.encoder).cosines, again.cosines, atol=1e-6)
