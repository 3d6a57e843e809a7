"""python -m clipdiff sample: one PNG per image with its parameters inside, grid.png and manifest.json."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from clipdiff.commands import cli_sample
from clipdiff.images import read_params

PROMPTS = ["A deep red rose flower", "A round white daisy with a yellow center"]
WS = [0.0, 2.0, -1.0]


@pytest.fixture(scope="module")
def sample_out(tmp_path_factory, tiny_clip_dir, tiny_unet_dir):
    out = tmp_path_factory.mktemp("sample")
    argv = ["--unet", str(tiny_unet_dir), "--clip", str(tiny_clip_dir), "--device", "cpu", "--steps", "3",
            "--sampler", "ddim", "--seed", "7", "--out", str(out)]
    for p in PROMPTS:
        argv += ["--prompt", p]
    for w in WS:
        argv += ["--w", str(w)]
    cli_sample.main(argv)
    return out


def test_one_png_per_image_with_its_parameters(sample_out, tiny_clip_dir):
    pngs = sorted(p for p in sample_out.glob("*.png") if p.name != "grid.png")
    assert len(pngs) == len(PROMPTS) * len(WS)
    seen = set()
    for path in pngs:
        params = read_params(path)
        assert params is not None, path
        assert params["seed"] == 7 and params["steps"] == 3 and params["sampler"] == "ddim"
        assert params["model"].startswith("unet") and params["clip"] == f"local-dir:{tiny_clip_dir}"
        assert params["conditioned_on"] == "text"
        seen.add((params["prompt"], params["w"]))
        with Image.open(path) as im:
            assert im.size == (16, 16) and im.mode == "RGB"
    assert seen == {(p, w) for p in PROMPTS for w in WS}


def test_manifest_lists_every_file_with_its_parameters(sample_out):
    manifest = json.loads((sample_out / "manifest.json").read_text())
    assert manifest["model"].startswith("unet")
    entries = manifest["images"]
    assert len(entries) == len(PROMPTS) * len(WS)
    for entry in entries:
        params = read_params(sample_out / entry["file"])
        assert {k: v for k, v in entry.items() if k != "file"} == params
    # the sweep's order: rows = w, columns = prompts
    assert [(e["w"], e["prompt"]) for e in entries] == [(w, p) for w in WS for p in PROMPTS]


def test_grid_has_a_cell_per_image(sample_out):
    with Image.open(sample_out / "grid.png") as grid:
        width, height = grid.size
    assert width > height * len(PROMPTS) / len(WS) * 0.8   # columns are prompts, rows are w
    assert width >= len(PROMPTS) * 96 and height >= len(WS) * 96


def test_images_differ_by_w_and_prompt_but_match_the_same_job(sample_out, tmp_path, tiny_clip_dir, tiny_unet_dir):
    entries = json.loads((sample_out / "manifest.json").read_text())["images"]
    pixels = {(e["w"], e["prompt"]): np.asarray(Image.open(sample_out / e["file"])) for e in entries}
    assert not np.array_equal(pixels[(2.0, PROMPTS[0])], pixels[(2.0, PROMPTS[1])])
    assert not np.array_equal(pixels[(2.0, PROMPTS[0])], pixels[(0.0, PROMPTS[0])])
    # w = -1 ignores the prompt: the unconditional image is the same for every prompt
    assert np.array_equal(pixels[(-1.0, PROMPTS[0])], pixels[(-1.0, PROMPTS[1])])
    # one job alone, from its recorded parameters, gives the same picture (to uint8 rounding)
    again = tmp_path / "again"
    cli_sample.main(["--unet", str(tiny_unet_dir), "--clip", str(tiny_clip_dir), "--device", "cpu", "--steps", "3",
                     "--sampler", "ddim", "--seed", "7", "--out", str(again), "--prompt", PROMPTS[1], "--w", "2"])
    alone = np.asarray(Image.open(next(again.glob("000_*.png"))))
    assert np.abs(alone.astype(int) - pixels[(2.0, PROMPTS[1])].astype(int)).max() <= 1


def test_bad_arguments_are_refused(tmp_path, tiny_clip_dir, tiny_unet_dir):
    base = ["--unet", str(tiny_unet_dir), "--clip", str(tiny_clip_dir), "--device", "cpu", "--out", str(tmp_path)]
    for bad in (["--prompt", "  "], ["--steps", "0"], ["--steps", "401"], ["--sampler", "euler"], ["--w", "10.5"],
                ["--seed", "-1"]):
        with pytest.raises(SystemExit) as err:
            cli_sample.main(base + bad)
        assert err.value.code == 2
    assert not list(tmp_path.glob("*.png"))


def test_the_cli_and_the_app_share_defaults_and_bounds(capsys):
    """One home for each: clipdiff.sampling, which the app's limits name too."""
    from clipdiff.app import limits
    from clipdiff.sampling import Sampling

    with pytest.raises(SystemExit):
        cli_sample.main(["--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert f"{limits.STEPS_RANGE[0]} to {limits.STEPS_RANGE[1]}" in help_text and "-10 to 10" in help_text
    with pytest.raises(SystemExit):
        cli_sample.main(["--steps", "401"])
    assert "steps must be between 1 and 400, not 401" in capsys.readouterr().err
    default = Sampling()
    assert (default.w, default.steps, default.sampler) == (limits.DEFAULT_W, limits.DEFAULT_STEPS,
                                                           limits.DEFAULT_SAMPLER)


def test_clipdiff_sample_negative_and_prompt_editing(tmp_path, tiny_clip_dir, tiny_unet_dir):
    import json

    from PIL import Image

    from clipdiff.commands import cli_sample
    from clipdiff.images import read_params

    def sample(out, *extra):
        cli_sample.main(["--unet", str(tiny_unet_dir), "--clip", str(tiny_clip_dir), "--device", "cpu", "--steps", "4",
                         "--sampler", "ddim", "--seed", "3", "--w", "2", "--out", str(tmp_path / out), *extra])
        manifest = json.loads((tmp_path / out / "manifest.json").read_text())["images"]
        return [(np.asarray(Image.open(tmp_path / out / m["file"])).astype(int), m) for m in manifest]

    plain = sample("plain", "--prompt", "a red rose", "--prompt", "a daisy")
    negative = sample("negative", "--prompt", "a red rose", "--prompt", "a daisy", "--negative", "red")
    assert [m["negative_prompt"] for _, m in negative] == ["red", "red"]
    assert "negative_prompt" not in plain[0][1]
    assert np.abs(plain[0][0] - negative[0][0]).max() > 2, "the negative changed the picture"
    with Image.open(tmp_path / "negative" / negative[0][1]["file"]) as im:
        assert read_params(im)["negative_prompt"] == "red"
    edited = sample("edited", "--prompt", "[a red rose:a daisy:0.0]", "--prompt", "[a red rose:a daisy:4]")
    assert [(m["prompt"], m["switch_to"], m["switch_at"]) for _, m in edited] == [
        ("a red rose", "a daisy", 0.0), ("a red rose", "a daisy", 1.0)]
    assert np.abs(edited[0][0] - plain[1][0]).max() <= 1, "switched at 0: the second prompt alone"
    assert np.abs(edited[1][0] - plain[0][0]).max() <= 1, "switched after the last step: the first alone"
    with pytest.raises(SystemExit):
        sample("bad", "--prompt", "a [red rose")
