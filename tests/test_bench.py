"""The benchmark runs end to end on tiny random models and writes every key. No timed assertions: figures
on a shared test machine mean nothing; benchmarks/README.md holds the real ones. One torch thread and few
steps keep it quick even while other work shares the cores."""
from __future__ import annotations

import json

import pytest
from PIL import Image

from clipdiff.commands.bench import KEYS, main

pytest.importorskip("gradio_client")


def test_bench_quick_writes_every_key(tmp_path, tiny_clip_dir, tiny_unet_dir, tiny_atlas_dir, capsys):
    out = tmp_path / "bench.json"
    assert main(["--quick", "--unet", str(tiny_unet_dir), "--clip", str(tiny_clip_dir), "--atlas", str(tiny_atlas_dir),
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


def test_the_core_figures_time_the_apps_own_streaming_loop(tiny_pipeline, monkeypatch):
    """generate_once drives sampling.stream, the loop the app's handlers stream from, not a copy of it."""
    from clipdiff import sampling
    from clipdiff.commands import bench
    from clipdiff.pipeline import images_per_prompt

    calls = []

    def watched_stream(progress, *args, **kwargs):
        calls.append((args, kwargs))
        return sampling.stream(progress, *args, **kwargs)

    monkeypatch.setattr(bench, "stream", watched_stream)
    once = bench.generate_once(tiny_pipeline, images_per_prompt(["a rose"], 2.0, 0, 2), 3, "ddim")
    assert calls == [((), {})], "once, at the app's own preview rate"
    assert once["calls"] == 3 and len(once["records"]) == 3 and once["images"].shape == (2, 16, 16, 3)


def test_bench_puts_every_runtime_side_by_side(tmp_path, tiny_clip_dir, tiny_unet_dir, capsys):
    """One row per runtime that runs here, each with forwards at batch 2/8/32, generate_4_s and its distance from
    eager fp32; the default is named, and the exact (fp32) rows are the eager model's within 1e-5 on eps."""
    from clipdiff.commands.bench_runtimes import RUNTIME_BATCHES, runtimes_here
    from clipdiff.runtimes import DEFAULT_RUNTIME

    out = tmp_path / "bench.json"
    assert main(["--quick", "--unet", str(tiny_unet_dir), "--clip", str(tiny_clip_dir), "--atlas",
                 str(tmp_path / "none"), "--skip-app", "--skip-reference", "--steps", "2", "--threads", "1",
                 "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    rows = result["runtimes"]
    refused = result["runtimes_refused"]     # by their load-time check against eager (OpenVINO bf16's NaN on some CPUs)
    assert set(rows) | set(refused) == {r.label for r in runtimes_here("cpu")} and not set(rows) & set(refused)
    assert "torch fp32" in rows and all("use --precision fp32" in why for why in refused.values())
    assert result["runtime"] == result["runtime_default"] == f"{DEFAULT_RUNTIME} fp32"
    for label, row in rows.items():
        assert all(row[f"forward_ms_b{b}"] > 0 for b in RUNTIME_BATCHES) and row["generate_4_s"] > 0
        if row["exact"]:
            assert row["max_eps_diff"] < 1e-5 and row["max_pixel_diff"] <= 1, label
    assert rows[result["runtime_fastest_exact"]]["exact"]
    printed = capsys.readouterr().out
    assert "U-Net runtimes" in printed and "default" in printed and all(label in printed for label in rows)
