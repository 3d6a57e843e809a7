"""The server-side checks (clipdiff.app.inputs): what a browser or an API client sends is refused in words,
or clamped to the app's limits with a note saying so."""
from __future__ import annotations

import pytest

gr = pytest.importorskip("gradio")

from clipdiff.app.inputs import Checked, clean_line, open_upload, png_parameters  # noqa: E402
from clipdiff.app.limits import MAX_IMAGE_STEPS, SEED_RANGE, STEPS_RANGE, W_RANGE  # noqa: E402
from clipdiff.images import save_png  # noqa: E402
from clipdiff.sampling import Sampling  # noqa: E402
from clipdiff.testing import awkward_uploads, refused_uploads, solid_image  # noqa: E402


def test_numbers_that_json_clients_cannot_even_send_are_refused():
    """NaN and inf never leave gradio_client (httpx refuses them), but a raw HTTP request can carry them."""
    checked = Checked()
    for bad in (float("nan"), float("inf"), -float("inf"), "abc", True, [1], {"a": 1}):
        with pytest.raises(gr.Error):
            checked.number(bad, "w", -10, 10)
    assert checked.notes == []
    assert checked.number("3", "steps", 1, 400, integer=True) == 3
    assert checked.number(1e300, "w", -10, 10) == 10 and checked.notes == ["w 1e+300 is outside -10 to 10: using 10."]
    with pytest.raises(gr.Error, match="missing"):
        checked.number(None, "images", 1, 8)
    with pytest.raises(gr.Error):
        checked.lines(12, 8)
    with pytest.raises(gr.Error):
        checked.choice(None, ("ddim",), "sampler")
    with pytest.raises(gr.Error, match="true or false"):
        checked.flag("yes", "include generated")


def test_lines_are_cleaned_and_capped():
    checked = Checked()
    assert checked.lines("a\n\n \x07b\u202ec \n" + "x\n" * 10, 3) == ["a", "b\u202ec", "x"]
    assert checked.notes == ["12 prompts: using the first 3."]
    assert clean_line("  a\x00\x1b[31m  b\ud800 ") == "a[31m b", "control characters and lone surrogates go"
    with pytest.raises(gr.Error, match="Type at least one prompt"):
        Checked().lines(" \n\t", 8)
    assert Checked().lines("", 8, required=False) == []
    with pytest.raises(gr.Error, match="the limit is 10,000"):
        Checked().lines("x" * 10_001, 8)


def test_sampling_is_checked_against_the_cores_bounds():
    checked = Checked()
    s = checked.sampling(99, "7", 2.6, "ddim")
    assert s == Sampling(w=W_RANGE[1], steps=3, sampler="ddim", seed=7)
    assert [n.split(" ")[0] for n in checked.notes] == ["w", "steps"]
    assert Checked().sampling(None, 5, None, "ddpm") == Sampling(seed=5, sampler="ddpm"), "missing: the defaults"
    random_seeds = {Checked().sampling(0, seed, 1, "ddim").seed for seed in (None, "", -1, None)}
    assert all(SEED_RANGE[0] <= x <= SEED_RANGE[1] for x in random_seeds)
    assert Checked().sampling(0, 2**40, STEPS_RANGE[1], "ddim").seed == SEED_RANGE[1]


def test_seeds_stay_in_range_and_messages_print_whole_numbers():
    """n images from seed s use s..s+n-1, wrapping past 2^31 - 1 to 0, and the wrap is said; a seed's
    message prints the numbers as they are, not 2.14748e+09."""
    checked = Checked()
    assert checked.seeds(5, 3) == [5, 6, 7] and checked.notes == [], "no wrap: nothing to say"
    assert checked.seeds(SEED_RANGE[1] - 1, 3) == [SEED_RANGE[1] - 1, SEED_RANGE[1], 0]
    assert checked.notes == ["Seeds wrap past 2147483647 to 0: the images use seeds 2147483646, 2147483647, 0."]
    checked = Checked()
    assert checked.sampling(0, 2**40, 1, "ddim").seed == SEED_RANGE[1]
    assert checked.notes == ["seed 1099511627776 is outside 0 to 2147483647: using 2147483647."]
    assert Checked().number(2.5, "images", 1, 8, integer=True) == 2
    checked = Checked()
    checked.number(2.6, "steps", 1, 400, integer=True)
    checked.number(-3.7, "seed", *SEED_RANGE, integer=True)
    assert checked.notes == ["steps 2.6 is not a whole number: using 3.",
                             "seed -3.7 is outside 0 to 2147483647: using 0."]
    with pytest.raises(gr.Error, match="sampler must be one of"):
        Checked().sampling(0, 1, 1, "euler")


def test_w_values_and_the_work_budget():
    checked = Checked()
    assert checked.ws("-2, -1 0,0, 1e9") == [-2.0, -1.0, 0.0, 10.0], "duplicates dropped, clamped"
    with pytest.raises(gr.Error, match="at least one w value"):
        Checked().ws(" , ")
    assert Checked().ws(" ".join(map(str, range(12)))) == list(map(float, range(9)))
    s = Sampling(steps=400)
    lowered = checked.budget(s, 8)
    assert lowered == Sampling(steps=MAX_IMAGE_STEPS // 8) and "using 200 steps" in checked.notes[-1]
    assert checked.budget(Sampling(steps=20), 21) == Sampling(steps=20)
    assert checked.status("Done.") == "Done.\n\n" + "\n\n".join(f"Note: {n}" for n in checked.notes)


def test_awkward_uploads_open_upright_as_rgb_or_fail_clearly(tmp_path):
    files = awkward_uploads(tmp_path)
    for name in ("grey", "rgba", "cmyk", "palette", "sixteen-bit", "one-pixel", "animated", "exif-rotated"):
        assert open_upload(str(files[name]), name).mode == "RGB", name
    assert open_upload(str(files["exif-rotated"])).size == (10, 30)
    assert open_upload(str(files["rgba"])).getpixel((0, 0)) == (255, 255, 255), "transparent becomes white"
    assert open_upload({"path": str(files["grey"])}).size == (20, 12), "as an API client names a file"
    with pytest.raises(gr.Error, match="not a readable image"):
        open_upload(str(files["truncated"]))
    with pytest.raises(gr.Error, match="expected an uploaded image"):
        open_upload(12)


def test_pictures_over_the_limit_and_files_that_are_no_pictures_are_refused(tmp_path):
    expected = {"bomb": "pixels|too large", "over-the-pixel-limit": "pixels|too large",
                "text-named-png": "not a readable", "pickle-named-png": "not a readable"}
    for name, path in refused_uploads(tmp_path).items():
        with pytest.raises(gr.Error, match=expected[name]):
            open_upload(str(path), name)


def test_png_parameters_come_only_from_clipdiff_pngs(tmp_path):
    from PIL import Image

    made = save_png(Image.new("RGB", (4, 4)), tmp_path / "made.png", {"prompt": "a rose", "seed": 3})
    assert png_parameters(str(made)) == {"prompt": "a rose", "seed": 3}
    with pytest.raises(gr.Error, match="no clipdiff parameters"):
        png_parameters(str(solid_image(tmp_path, "plain.png", "red")))
    with pytest.raises(gr.Error, match="not a readable PNG"):
        png_parameters(str(refused_uploads(tmp_path)["text-named-png"]))
    with pytest.raises(gr.Error, match="not a readable PNG"):
        png_parameters(None)
