"""The benchmark runs end to end on tiny random models and writes every key. No timed assertions: figures
on a shared test machine mean nothing; benchmarks/README.md holds the real ones. One torch thread and few
steps keep it quick even while other work shares the cores."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clipdiff.bench import KEYS, main

pytest.importorskip("gradio_client")


def write_pca_atlas(folder: Path, encoder, n_images: int = 12) -> Path:
    """An atlas in the shipped format whose three views are all PCA: fitting UMAP would cost ~20 s here."""
    from safetensors.numpy import save_file

    from clipdiff.atlas import ARRAYS, META, METHODS
    from clipdiff.similarity import unit

    rng = np.random.default_rng(0)
    labels = np.arange(n_images) % 3
    images = [Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)) for _ in range(n_images)]
    texts = ["a rose", "a daisy", "a sunflower", "a red flower"]
    image_emb, text_emb = encoder.encode_image(images).numpy(), encoder.encode_text(texts).numpy()
    raw = np.concatenate([unit(image_emb).numpy(), unit(text_emb).numpy()])
    mean = raw.mean(0)
    _, _, vt = np.linalg.svd(raw - mean, full_matrices=False)
    coords = ((raw - mean) @ vt[:2].T).astype(np.float32)
    arrays = {"image_emb": image_emb.astype(np.float16), "text_emb": text_emb.astype(np.float16),
              "labels": labels.astype(np.int32), "text_labels": np.array([0, 1, 2, -1], dtype=np.int32),
              "image_mean": unit(image_emb).numpy().mean(0), "text_mean": unit(text_emb).numpy().mean(0),
              "pca_mean": mean.astype(np.float32), "pca_components": vt[:2].astype(np.float32),
              **{f"coords_{m}": coords for m in METHODS}}
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: np.ascontiguousarray(v) for k, v in arrays.items()}, str(folder / ARRAYS))
    (folder / META).write_text(json.dumps({"clip_identity": encoder.identity, "class_names": ["a", "b", "c"],
                                           "sources": [f"{i}.jpg" for i in range(n_images)], "texts": texts,
                                           "methods": list(METHODS)}))
    return folder


def test_bench_quick_writes_every_key(tmp_path, tiny_clip_dir, tiny_unet_dir, tiny_pipeline, capsys):
    atlas = write_pca_atlas(tmp_path / "atlas", tiny_pipeline.encoder)
    out = tmp_path / "bench.json"
    assert main(["--quick", "--unet", str(tiny_unet_dir), "--clip", str(tiny_clip_dir), "--atlas", str(atlas),
                 "--steps", "3", "--reference-steps", "2", "--threads", "1", "--json", str(out),
                 "--out", str(tmp_path / "grids")]) == 0

    result = json.loads(out.read_text())
    for key in (*KEYS, "cpu_model", "torch_threads", "torch_version", "unet_in_loop_ms", "loop_overhead_ratio"):
        assert result.get(key) is not None, f"{key} missing"
    assert result["concurrent_errors"] == 0, result["concurrent_error_messages"]
    assert result["reference_steps"] == 2 and result["reference_extrapolated"] is True
    assert result["unet_calls"] == result["steps"]
    assert 0 < result["unet_in_loop_ms"] and result["loop_overhead_ratio"] >= 1.0, "the loop includes its forwards"
    assert result["skipped"] == []
    for name in ("reference_grid.png", "default_grid.png", "side_by_side.png"):
        assert Image.open(tmp_path / "grids" / name).width > 0
    printed = capsys.readouterr().out
    assert "generate_4_s" in printed and "speedup_vs_reference" in printed


def test_bench_skipped_parts_are_null(tmp_path, tiny_clip_dir, tiny_unet_dir):
    out = tmp_path / "bench.json"
    assert main(["--quick", "--unet", str(tiny_unet_dir), "--clip", str(tiny_clip_dir), "--atlas",
                 str(tmp_path / "none"), "--skip-app", "--skip-reference", "--steps", "2", "--threads", "1",
                 "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert set(KEYS) <= set(result)
    skipped = ("reference_s", "speedup_vs_reference", "map_place_ms", "atlas_load_s", "app_ready_s",
               "peak_rss_mb", "rss_growth_mb", "concurrent_p95_s", "concurrent_errors")
    assert all(result[k] is None for k in skipped)
    assert result["generate_4_s"] > 0 and result["playback_frame_ms"] > 0
