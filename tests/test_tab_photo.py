"""The Photo tab's handlers, called as functions (no server), and its endpoints through gradio_client."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

gr = pytest.importorskip("gradio")

from clipdiff import tour  # noqa: E402
from clipdiff.app.limits import EDIT_STRIP  # noqa: E402
from clipdiff.app.session import LastRun  # noqa: E402
from clipdiff.app.tabs import generate  # noqa: E402
from clipdiff.app.tabs import photo as tab  # noqa: E402
from clipdiff.images import read_params  # noqa: E402


@pytest.fixture
def photo_file(tmp_path, tiny_models):
    """A 32 x 32 picture of random pixels: any change to it shows."""
    size = tiny_models.pipeline.image_size
    pixels = np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8)
    path = tmp_path / "photo.png"
    Image.fromarray(pixels).save(path)
    return str(path), pixels


def pixels(path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB")).astype(int)


def test_forward_noise_fades_the_photo_into_one_seeds_noise(ctx, photo_file):
    path, original = photo_file
    at_t, strip, figure, summary, seed = tab.forward_noise(ctx, path, False, 10, 3)
    assert seed == 3 and "At t = 10 of 399" in summary
    x_early = np.asarray(at_t.resize(original.shape[:2], Image.Resampling.NEAREST)).astype(int)
    assert np.abs(x_early - original).mean() < 20, "at t = 10 the photo is still there"
    late = np.asarray(tab.forward_noise(ctx, path, False, 399, 3)[0].resize(original.shape[:2])).astype(int)
    assert np.abs(late - original).mean() > 40, "at the last step it is mostly noise"
    again = tab.forward_noise(ctx, path, False, 10, 3)[0]
    assert np.array_equal(np.asarray(again), np.asarray(at_t)), "the same seed, the same noise"
    assert strip.width > strip.height, "a strip over t"
    assert [trace.name for trace in figure.data][:3] == ["sqrt(a_bar_t): the photo's weight",
                                                        "sqrt(1 - a_bar_t): the noise's weight", "SNR"]
    assert list(figure.data[-1].x) == [10], "the chosen t is marked"


def test_forward_noise_clamps_t_and_says_what_is_missing(ctx, photo_file, tmp_path):
    path, _ = photo_file
    summary = tab.forward_noise(ctx, path, False, 5000, 1)[3]
    assert "At t = 399" in summary and "t 5000 is outside 0 to 399" in summary
    with pytest.raises(gr.Error, match="Upload a photo, or generate an image first"):
        tab.forward_noise(ctx, None, True, 10, 1, None)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a picture")
    with pytest.raises(gr.Error, match="photo is not a readable image"):
        tab.forward_noise(ctx, str(broken), False, 10, 1)
    with pytest.raises(gr.Error, match="t must be a number"):
        tab.forward_noise(ctx, path, False, "soon", 1)


def test_forward_noise_uses_the_last_generated_image_when_there_is_no_upload(ctx):
    *_, run = list(generate.generate(ctx, "a red rose", 2.0, 2, "ddim", 1, 1))[-1]
    at_t = tab.forward_noise(ctx, None, True, 0, 1, run)[0]
    seen = np.asarray(at_t.resize(run.frames[0].shape[:2], Image.Resampling.NEAREST)).astype(int)
    assert np.abs(seen - run.frames[0].astype(int)).mean() < 3, "t = 0 is the generated image, barely noised"


def test_an_edit_is_recorded_as_the_sessions_run_with_a_strip_over_starts(ctx, photo_file):
    path, original = photo_file
    outputs = list(tab.edit_photo(ctx, path, False, "a sunflower", 0.5, 2.0, 4, 6, "ddim", ""))
    gallery, strip, status, seed, run = outputs[-1]
    assert "Done" in status and seed == 4 and isinstance(run, LastRun)
    assert len(gallery) == 2 and read_params(gallery[1][0])["edited_photo_at"] == 0.5
    assert len(run.playback.records) == 3, "only the steps below 0.5 T are taken and recorded"
    assert strip.width > 6 * strip.height / 2, f"the photo and {len(EDIT_STRIP)} starts in one row"
    assert any(isinstance(o[0], list) and "step" in o[2] for o in outputs[:-1]), "previews while it edits"


def test_an_edit_refuses_what_it_cannot_do(ctx, photo_file):
    path, _ = photo_file
    with pytest.raises(gr.Error, match="Type at least one prompt"):
        list(tab.edit_photo(ctx, path, False, "", 0.5, 2.0, 1, 4, "ddim", ""))
    with pytest.raises(gr.Error, match="Upload a photo"):
        list(tab.edit_photo(ctx, None, False, "a rose", 0.5, 2.0, 1, 4, "ddim", ""))
    *_, (_, _, status, _, _) = tab.edit_photo(ctx, path, False, "a rose", 7, 2.0, 1, 4, "ddim", "")
    assert "start (fraction of T) 7 is outside 0 to 1" in status and "noised to 1 of T" in status


def test_inversion_round_trip_says_its_error(ctx, photo_file):
    path, _ = photo_file
    strip, status = tab.invert_photo(ctx, path, False, "a daisy", 3)
    assert "Round trip in 3 DDIM steps each way" in status and "uint8 levels" in status
    assert strip.width > 2 * strip.height, "photo, x_T, and back"
    assert "inversion steps 1000 is outside 1 to 100" in tab.invert_photo(ctx, path, False, "a daisy", 1000)[1]


def test_the_photo_experiments_close_the_tour_and_start_from_a_generated_image():
    assert tour.ForwardNoise().TAB == tour.EditPhoto("x").TAB == "photo"
    last = tour.EXPERIMENTS[-2:]
    assert [e.id for e in last] == ["forward-process", "sdedit"]
    assert all(r.generate is not None and r.tab == "photo" for e in last for r in e.runs)
    with pytest.raises(ValueError, match="needs a Generate step"):
        tour.Run("alone", then=tour.EditPhoto("a sunflower"))


# -- through the API -------------------------------------------------------------------------------------------
def test_edit_photo_endpoint_from_0_is_the_photo_and_from_1_a_plain_generation(live_app, photo_file):
    from gradio_client import Client, handle_file

    path, original = photo_file
    client = Client(live_app.url, verbose=False)
    try:
        gallery, _, status, seed = client.predict(handle_file(path), False, "a sunflower", 0.0, 2.0, 7, 4, "ddim", "",
                                                  api_name="/edit_photo")
        assert "Done" in status and seed == 7
        assert np.abs(pixels(gallery[1]["image"]) - original).max() <= 2, "from 0 T: the photo, within 2 levels"
        gallery, _, _, _ = client.predict(handle_file(path), False, "a sunflower", 1.0, 2.0, 7, 4, "ddim", "",
                                          api_name="/edit_photo")
        plain, _, _ = client.predict("a sunflower", 2.0, 4, "ddim", 7, 1, api_name="/generate")
        assert np.abs(pixels(gallery[1]["image"]) - pixels(plain[0]["image"])).max() <= 1, \
            "from 1 T: the prompt's plain generation with that seed"
        at_t, strip, _, summary, seed = client.predict(handle_file(path), False, 100, 2, api_name="/forward_noise")
        assert seed == 2 and "At t = 100" in summary and pixels(strip).shape[1] > pixels(strip).shape[0]
    finally:
        client.close()
