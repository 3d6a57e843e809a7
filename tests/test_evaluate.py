"""The evaluation maths on hand-made cases, and eval-gen / eval-clip end to end on tiny random models."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from clipdiff import evaluate as ev
from clipdiff.__main__ import main as clipdiff_main


def _cloud(n=200, d=16, seed=0):
    return torch.as_tensor(np.random.default_rng(seed).normal(size=(n, d)))


def test_frechet_distance_is_zero_against_itself_and_grows_with_a_shift():
    x = _cloud()
    assert ev.frechet_distance(x, x) == pytest.approx(0, abs=1e-8)
    shifts = [ev.frechet_distance(x, x + s) for s in (0.1, 0.5, 1.0)]
    assert shifts[0] > 1e-4 and shifts[0] < shifts[1] < shifts[2]
    assert shifts[2] == pytest.approx(16 * 1.0 ** 2, rel=1e-6)  # a pure shift adds |shift|^2 = D * s^2


def test_frechet_distance_handles_fewer_samples_than_dimensions():
    x = _cloud(n=10, d=64)
    assert ev.frechet_distance(x, x) == pytest.approx(0, abs=1e-8)
    assert math.isfinite(ev.frechet_distance(x, _cloud(n=10, d=64, seed=1)))


def test_frechet_distance_of_known_gaussians():
    # 1-D: FD = (m1 - m2)^2 + (s1 - s2)^2
    mu1, mu2 = np.array([1.0]), np.array([3.0])
    assert ev.frechet_distance_from_stats(mu1, np.array([[4.0]]), mu2, np.array([[1.0]])) == pytest.approx(4 + 1)


def test_cmmd_is_zero_against_itself_and_positive_otherwise():
    x = ev.unit(_cloud(d=32))
    y = ev.unit(_cloud(d=32, seed=1) + 1.0)
    assert ev.cmmd(x, x) == pytest.approx(0, abs=1e-9)
    assert ev.cmmd(x, y) > 0
    assert ev.cmmd(x, y) == pytest.approx(ev.cmmd(y, x))


def test_real_reference_matches_the_pure_functions():
    real_raw, gen_raw = _cloud(n=50, d=8) * 3, _cloud(n=20, d=8, seed=2) * 3 + 1
    real = ev.RealReference.of(real_raw, max_real=1000)
    gen = ev.unit(gen_raw).double()
    assert real.cmmd(gen) == pytest.approx(ev.cmmd(gen, ev.unit(real_raw).double()))
    assert real.frechet_distance(gen) == pytest.approx(ev.frechet_distance(gen, ev.unit(real_raw).double()))
    assert len(ev.RealReference.of(real_raw, max_real=30).features) == 30


def test_diversity_hand_made():
    same = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    assert ev.diversity(same, [0, 0, 1, 1]) == pytest.approx(0)
    opposite = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    assert ev.diversity(opposite, [0, 0, 1, 1]) == pytest.approx((2 + 0) / 2)


def test_recall_at_k_hand_made():
    gallery = torch.eye(4)
    # query 0 hits its image, query 1 is closest to image 2 then image 1, query 2 is closest to 0, 1, 3 then 2
    queries = torch.tensor([[1.0, 0.1, 0, 0], [0, 0.8, 1.0, 0], [0.9, 0.8, 0.1, 0.7], [0, 0, 0, 1.0]])
    recall = ev.recall_at_k(queries, gallery, [0, 1, 2, 3], ks=(1, 2, 4))
    assert recall == {1: pytest.approx(0.5), 2: pytest.approx(0.75), 4: pytest.approx(1.0)}


def test_zero_shot_accuracy_hand_made():
    classes = torch.tensor([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0]])
    images = torch.tensor([[2.0, 0.1, 0], [0.1, 0.2, 3.0], [0.5, 0.4, 0.0]])
    acc = ev.zero_shot_accuracy(images, classes, [0, 2, 1], ks=(1, 2))
    assert acc == {1: pytest.approx(2 / 3), 2: pytest.approx(1.0)}


def test_kid_is_near_zero_for_one_distribution_and_grows_with_a_shift():
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(200, 8, generator=gen), torch.randn(200, 8, generator=gen)
    same, shifted = ev.kid(x, y), ev.kid(x, y + 1.0)
    assert shifted > 0.5 and abs(same) < 0.1 * shifted   # unbiased: near zero, either sign, for one distribution
    assert np.isnan(ev.kid(x[:1], y))                       # one sample: no unbiased estimate


def test_kid_against_a_prepared_real_side_is_the_plain_estimator():
    gen = torch.Generator().manual_seed(1)
    x, y = torch.randn(30, 6, generator=gen), torch.randn(40, 6, generator=gen) + 0.3
    real = ev.RealReference.of(y, max_real=100)
    assert real.kid(ev.unit(x)) == pytest.approx(1000 * ev.kid(ev.unit(x), ev.unit(y)), rel=1e-9)


def test_guidance_curve_figures_are_finite(tiny_pipeline):
    real_emb = torch.randn(12, tiny_pipeline.encoder.embed_dim)
    results = ev.guidance_curve(tiny_pipeline, ["a red rose", "a white daisy"], [0.0, 2.0], n=2, seed=3,
                                steps=2, sampler="ddim", real_emb=real_emb)
    assert [r["w"] for r in results] == [0.0, 2.0]
    for r in results:
        for key in ("clip_score", "clip_score_std", "frechet_distance", "cmmd", "kid", "diversity"):
            assert math.isfinite(r[key]), key
        assert r["n_images"] == 4 and len(r["per_prompt"]) == 2
    assert results[0]["clip_score"] != results[1]["clip_score"]  # only w changed, and it matters


def test_eval_gen_cli_writes_json_and_plot(tiny_clip_dir, tiny_unet_dir, tmp_path, image_folder):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("# flowers\na red rose\n\na white daisy\n")
    out = tmp_path / "eval" / "gen.json"
    rc = clipdiff_main(["eval-gen", "--prompts", str(prompts), "--w", "0", "--w", "1", "--n", "2",
                        "--json", str(out), "--unet", str(tiny_unet_dir), "--clip", str(tiny_clip_dir),
                        "--real", str(image_folder), "--steps", "2", "--sampler", "ddim", "--device", "cpu",
                        "--species", "0"])
    assert rc == 0
    report = json.loads(out.read_text())
    for key in ("prompts", "ws", "n", "seed", "steps", "sampler", "clip", "real", "metrics", "note", "runs"):
        assert key in report, key
    assert report["prompts"] == ["a red rose", "a white daisy"] and report["real"]["count"] == 12
    assert "Inception" in report["note"]
    (run,) = report["runs"]
    assert run["unet"] == str(tiny_unet_dir) and run["model"].startswith(tiny_unet_dir.name)
    assert [r["w"] for r in run["results"]] == [0.0, 1.0]
    for r in run["results"]:
        for key in ("clip_score", "frechet_distance", "cmmd", "diversity"):
            assert isinstance(r[key], float) and math.isfinite(r[key]), key
    png = out.with_suffix(".png")
    assert png.is_file() and Image.open(png).size[0] > 100


def test_eval_gen_without_real_images_leaves_distances_out(tiny_clip_dir, tiny_unet_dir, tmp_path, capsys):
    """Also: the species yardstick is opt-in, so by default nothing trains a classifier first."""
    out = tmp_path / "gen.json"
    clipdiff_main(["eval-gen", "--w", "1", "--n", "2", "--json", str(out), "--unet", str(tiny_unet_dir),
                   "--clip", str(tiny_clip_dir), "--real", "none", "--steps", "1", "--sampler", "ddim",
                   "--device", "cpu", "--yardstick", str(tmp_path / "no-yardstick")])
    report = json.loads(out.read_text())
    (r,) = report["runs"][0]["results"]
    assert r["frechet_distance"] is None and r["cmmd"] is None and r["kid"] is None
    assert math.isfinite(r["clip_score"])
    assert "species" not in report and "species" not in report["runs"][0]
    assert not (tmp_path / "no-yardstick").exists()
    captured = capsys.readouterr()
    assert "left out" in captured.err and "opt-in: --species 4" in captured.out


def _tiny_captions_data(root, per_species=4):
    """A captions.jsonl with two species and a 'test' split, plus a flowers5 folder with a third species."""
    colours = {"red rose": (220, 30, 40), "yellow daisy": (240, 220, 40)}
    rows = []
    (root / "oxford102" / "images").mkdir(parents=True)
    for name, colour in colours.items():
        for i in range(per_species):
            file = f"images/{name.replace(' ', '_')}_{i}.png"
            Image.fromarray(np.full((20, 20, 3), colour, dtype=np.uint8)).save(root / "oxford102" / file)
            rows.append({"image": file, "class_name": name, "split": "test" if i % 2 else "train",
                         "captions": [f"a {name} number {i}", f"this flower is a {name}"]})
    (root / "oxford102" / "captions.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    (root / "flowers5" / "tulip").mkdir(parents=True)
    Image.fromarray(np.full((20, 20, 3), (200, 0, 200), dtype=np.uint8)).save(root / "flowers5" / "tulip" / "0.png")
    return root


def test_eval_clip_cli_on_tiny_captions_data(tiny_clip_dir, tmp_path):
    data = _tiny_captions_data(tmp_path / "data")
    out = tmp_path / "clip.json"
    rc = clipdiff_main(["eval-clip", "--clip", str(tiny_clip_dir), "--data", str(data), "--json", str(out),
                        "--device", "cpu"])
    assert rc == 0
    report = json.loads(out.read_text())
    assert report["clip"] == f"local-dir:{tiny_clip_dir}"
    assert "test" in report["split"]
    counts = report["counts"]
    # 4 test images, half held out; tulip (flowers5) is not a candidate species
    assert counts["heldout_images"] == 2 and counts["gallery"] == 2 and counts["candidate_species"] == 2
    for value in [*report["caption_to_image"].values(), *report["zero_shot"].values()]:
        assert 0.0 <= value <= 1.0
    assert set(report["caption_to_image"]) == {"R@1", "R@5", "R@10"}
    assert set(report["zero_shot"]) == {"top1", "top5"}
    assert report["caption_to_image"]["R@5"] == 1.0  # 2 images in the gallery: always within 5
