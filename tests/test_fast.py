"""The fast mode on tiny models: the student's w input, its sampler, what it refuses, its checkpoint, its training
and the CLI."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from clipdiff.checkpoints import CheckpointError
from clipdiff.commands import cli_embed, cli_sample
from clipdiff.diffusion import load_diffusion
from clipdiff.fast import FastConfig, FastRun, FastStudent, load_fast, needs_teacher, rows, save_fast
from clipdiff.images import read_params
from clipdiff.pipeline import ClipDiffusionPipeline, Job, images_per_prompt, model_id_of, prompt_edits
from clipdiff.sampling import GuidedRun, Sampling, drive, run_to_end
from clipdiff.testing import make_image_folder, tiny_student
from clipdiff.training import train_fast
from clipdiff.training.common import LossLog

FAST_ARGS = ["--batch-size", "4", "--sample-every", "0", "--n-heldout", "2", "--warmup-steps", "1",
             "--ddim-steps", "10", "--device", "cpu", "--export-dtype", "fp32"]


@pytest.fixture(scope="module")
def teacher(tiny_unet_dir):
    model, config = load_diffusion(tiny_unet_dir)
    return model, config


def student_of(teacher, seed: int = 0, trained: bool = True) -> tuple[FastStudent, FastConfig]:
    """A student of the tiny teacher; trained: its w projection made non-zero, as training makes it."""
    return tiny_student(*teacher, seed=seed, trained=trained)


@pytest.fixture(scope="module")
def fast_pipeline(tiny_clip_dir, tiny_unet_dir, fast_dir):
    return ClipDiffusionPipeline.load(tiny_unet_dir, clip=str(tiny_clip_dir), device="cpu", runtime="torch",
                                      fast=fast_dir)


def sample_fast(student, fast, cond, w, seeds, steps):
    return run_to_end(drive(FastRun(student, fast, cond, w, seeds, steps), student)).images


# -- the student ---------------------------------------------------------------------------------------------------
def test_an_untrained_student_is_the_conditional_teacher_and_w_changes_a_trained_one(teacher):
    model, _ = teacher
    x, t, cond = torch.randn(3, 3, 16, 16), torch.tensor([5, 100, 399]), torch.randn(3, 32)
    fresh, _ = student_of(teacher, trained=False)
    with torch.no_grad():
        assert torch.equal(fresh(x, t, rows(cond, 2.0)), model(x, t, cond))      # w's projection starts at zero
        student, _ = student_of(teacher)
        at_0, at_2, at_2_again = (student(x, t, rows(cond, w)) for w in (0.0, 2.0, 2.0))
    assert (at_0 - at_2).abs().mean() > 1e-3
    assert torch.equal(at_2, at_2_again)


def test_the_student_takes_a_condition_row_one_wider_than_the_teacher(teacher):
    student, _ = student_of(teacher)
    assert student.cond_dim == teacher[0].cond_dim + 1
    assert rows(torch.zeros(2, 32), torch.tensor([1.0, -3.0]))[:, -1].tolist() == [1.0, -3.0]


@pytest.mark.parametrize("steps", [1, 2, 4, 8])
def test_the_fast_sampler_runs_1_to_8_steps_deterministically_per_seed(teacher, steps):
    student, fast = student_of(teacher)
    cond = torch.randn(3, 32, generator=torch.Generator().manual_seed(1))
    run = FastRun(student, fast, cond, 2.0, [5, 6, 7], steps)
    assert run.total == steps and run.scheduler.timesteps[0] == 399
    a = sample_fast(student, fast, cond, 2.0, [5, 6, 7], steps)
    b = sample_fast(student, fast, cond, 2.0, [5, 6, 7], steps)
    alone = sample_fast(student, fast, cond[1:2], 2.0, [6], steps)
    assert a.shape == (3, 3, 16, 16) and a.abs().max() <= 1
    assert torch.equal(a, b)
    assert torch.allclose(a[1:2], alone, atol=1e-5)      # a seed's image does not depend on its batch mates
    assert not torch.allclose(a[0], a[2])


def test_one_forward_per_step(teacher):
    student, fast = student_of(teacher)
    calls = []

    def predict(x, t, cond):
        calls.append(x.shape[0])
        return student(x, t, cond)
    run_to_end(drive(FastRun(student, fast, torch.randn(2, 32), 1.0, [0, 1], 4), predict))
    assert calls == [2, 2, 2, 2]          # the teacher asks 2N rows per step: conditional and unconditional


def test_the_registry_bounds_the_fast_samplers_steps():
    assert Sampling(2.0, 4, "fast").problems() == []
    assert Sampling(2.0, 9, "fast").problems() == ["the fast sampler takes at most 8 steps, not 9"]
    assert Sampling(2.0, 12, "dpmsolver-karras").problems() == []


def test_a_guided_run_refuses_the_fast_sampler(teacher):
    with pytest.raises(ValueError, match="fast mode's student"):
        GuidedRun(teacher[0], torch.zeros(1, 32), 2.0, [0], sampler="fast", steps=4)


# -- the checkpoint ------------------------------------------------------------------------------------------------
def test_a_saved_student_loads_back_in_fp16_and_fp32(tmp_path, teacher):
    student, fast = student_of(teacher)
    x, t, cond = torch.randn(2, 3, 16, 16), torch.tensor([7, 399]), rows(torch.randn(2, 32), 2.0)
    for dtype, tolerance in ((torch.float32, 0), (torch.float16, 0.05)):
        save_fast(student, fast, tmp_path / str(dtype), dtype)
        weights = load_file(str(tmp_path / str(dtype) / "model.safetensors"))
        assert {v.dtype for v in weights.values()} == {dtype}
        loaded, config = load_fast(tmp_path / str(dtype))
        assert config == fast and next(loaded.parameters()).dtype == torch.float32
        with torch.no_grad():
            assert (loaded(x, t, cond) - student(x, t, cond)).abs().max() <= tolerance


def test_a_missing_student_is_refused_in_words(tmp_path):
    with pytest.raises(CheckpointError, match="no fast-mode student in .*train-fast"):
        load_fast(tmp_path / "nothing")


def test_a_student_of_another_teacher_is_refused(tmp_path, teacher, tiny_pipeline):
    student, fast = student_of(teacher)           # its teacher is "unet-tiny", not the pipeline's
    save_fast(student, fast, tmp_path / "other")
    with pytest.raises(CheckpointError, match="distilled from unet-tiny, not from the loaded U-Net"):
        ClipDiffusionPipeline(tiny_pipeline.encoder, teacher[0], teacher[1], tiny_pipeline.model_id).with_student(
            tmp_path / "other", runtime="torch")


# -- the pipeline: what the fast mode runs, what it refuses ---------------------------------------------------------
def test_the_pipeline_samples_the_fast_mode_and_records_the_student_in_the_parameters(fast_pipeline, fast_dir):
    jobs = images_per_prompt(["a red rose"], 2.0, 3, 2)
    run = fast_pipeline.prepare(jobs, 4, "fast")
    assert fast_pipeline.fast_problems(run) == []
    a = run_to_end(fast_pipeline.sample(run)).images
    b = fast_pipeline.generate(jobs, 4, "fast").images
    assert torch.equal(a, b)
    assert not torch.equal(a, fast_pipeline.generate(jobs, 12, "ddim").images)
    params = fast_pipeline.parameters_of(run.jobs[0], 4, "fast")
    assert params["sampler"] == "fast" and params["steps"] == 4
    assert params["model"] == model_id_of(fast_dir) and params["distilled_from"] == fast_pipeline.model_id
    assert "distilled_from" not in fast_pipeline.parameters_of(run.jobs[0], 12, "ddim")


@pytest.mark.parametrize("jobs, feature", [
    (images_per_prompt(["a rose"], 2.0, 0, 1, negative="red"), "A negative prompt"),
    (prompt_edits("a daisy", "a sunflower", [0.5], 2.0, 0), "Prompt editing"),
    ([Job("a rose", 2.0, 0, photo=torch.zeros(3, 16, 16), photo_at=0.6)], "Editing a photo"),
])
def test_the_teachers_features_are_refused_in_the_fast_mode(fast_pipeline, jobs, feature):
    run = fast_pipeline.prepare(jobs, 4, "fast")
    assert fast_pipeline.fast_problems(run) == [needs_teacher(feature) if feature != "Prompt editing"
                                                else needs_teacher("Prompt editing ([from:to:when])")]
    assert "needs the teacher U-Net" in fast_pipeline.fast_problems(run)[0]
    with pytest.raises(ValueError, match="needs the teacher"):
        fast_pipeline.sample(run)
    assert fast_pipeline.fast_problems(fast_pipeline.prepare(jobs, 12, "ddim")) == []


def test_a_w_the_student_did_not_learn_is_refused(fast_pipeline):
    run = fast_pipeline.prepare(images_per_prompt(["a rose"], -2.0, 0, 1) + images_per_prompt(["a rose"], 6, 0, 1),
                                4, "fast")
    assert fast_pipeline.fast_problems(run) == [
        "The fast mode learned w from 0 to 4, not w = -2, 6: choose another sampler (the teacher's) for that w."]
    assert fast_pipeline.fast_problems(fast_pipeline.prepare(images_per_prompt(["a rose"], 4.0, 0, 1), 4, "fast")) == []


def test_without_a_student_the_fast_sampler_is_refused_with_how_to_get_one(tiny_pipeline):
    run = tiny_pipeline.prepare(images_per_prompt(["a rose"], 2.0, 0, 1), 4, "fast")
    assert tiny_pipeline.fast_problems(run) == [tiny_pipeline.student_problem]
    assert "train-fast" in tiny_pipeline.student_problem and "--fast" in tiny_pipeline.student_problem
    with pytest.raises(ValueError, match="not loaded"):
        tiny_pipeline.sample(run)


# -- the CLI -------------------------------------------------------------------------------------------------------
def test_cli_sample_fast_writes_pngs_that_name_the_sampler(tmp_path, tiny_clip_dir, tiny_unet_dir, fast_dir):
    out = tmp_path / "out"
    cli_sample.main(["--prompt", "a red rose", "--w", "2", "--sampler", "fast", "--steps", "2", "--out", str(out),
                     "--unet", str(tiny_unet_dir), "--clip", str(tiny_clip_dir), "--fast", str(fast_dir),
                     "--device", "cpu", "--runtime", "torch"])
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["model"] == model_id_of(fast_dir)
    with Image.open(out / manifest["images"][0]["file"]) as im:
        params = read_params(im)
    assert params["sampler"] == "fast" and params["steps"] == 2 and params["distilled_from"] == model_id_of(
        tiny_unet_dir)


def test_cli_sample_fast_defaults_to_4_steps_and_refuses_more_than_8(tmp_path, tiny_clip_dir, tiny_unet_dir,
                                                                     fast_dir, capsys):
    common = ["--prompt", "a rose", "--w", "2", "--sampler", "fast", "--unet", str(tiny_unet_dir), "--clip",
              str(tiny_clip_dir), "--fast", str(fast_dir), "--device", "cpu", "--runtime", "torch"]
    cli_sample.main(common + ["--out", str(tmp_path / "a")])
    assert json.loads((tmp_path / "a" / "manifest.json").read_text())["images"][0]["steps"] == 4
    no_w = [a for a in common if a not in ("--w", "2")]
    cli_sample.main(no_w + ["--out", str(tmp_path / "c")])      # the reference w that it learned: 0 to 2
    assert [i["w"] for i in json.loads((tmp_path / "c" / "manifest.json").read_text())["images"]] == [0, 0.5, 1, 2]
    with pytest.raises(SystemExit):
        cli_sample.main(common + ["--steps", "12", "--out", str(tmp_path / "b")])
    assert "at most 8 steps" in capsys.readouterr().err


def test_cli_sample_refuses_the_fast_mode_without_a_student_or_with_a_negative(tmp_path, tiny_clip_dir,
                                                                               tiny_unet_dir, fast_dir, capsys):
    common = ["--prompt", "a rose", "--sampler", "fast", "--unet", str(tiny_unet_dir), "--clip", str(tiny_clip_dir),
              "--device", "cpu", "--runtime", "torch", "--out", str(tmp_path / "never")]
    with pytest.raises(SystemExit):
        cli_sample.main(common + ["--fast", str(tmp_path / "missing")])
    assert "no fast-mode student" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli_sample.main(common + ["--fast", str(fast_dir), "--negative", "red"])
    assert "A negative prompt needs the teacher U-Net" in capsys.readouterr().err
    assert not (tmp_path / "never").exists()


# -- training ------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def embedded(tmp_path_factory, tiny_clip_dir) -> dict:
    work = tmp_path_factory.mktemp("fast_training")
    images = make_image_folder(work / "images")
    cli_embed.main(["--data", str(images), "--clip", str(tiny_clip_dir), "--out", str(work / "emb"), "--device",
                    "cpu"])
    return {"work": work, "images": images, "embeddings": work / "emb"}


def train_args(embedded: dict, teacher_dir: Path, out: Path, steps: int, *extra: str) -> list[str]:
    return FAST_ARGS + ["--data", str(embedded["images"]), "--embeddings", str(embedded["embeddings"]),
                        "--teacher", str(teacher_dir), "--out", str(out), "--export", str(out) + "_export",
                        "--max-steps", str(steps), *extra]


def test_train_fast_exports_a_student_the_pipeline_loads(embedded, tiny_unet_dir, tiny_clip_dir):
    out = embedded["work"] / "two"
    train_fast.main(train_args(embedded, tiny_unet_dir, out, 2))
    assert [r[0] for r in LossLog(out / "loss.csv").rows()] == [1, 2]
    student, config = load_fast(Path(str(out) + "_export"))
    assert config.teacher == model_id_of(tiny_unet_dir) and config.training["steps"] == 2
    assert config.original_inference_steps == 10 and config.w_range == (0.0, 4.0)
    assert student.unet.time_embedding.cond_proj.weight.abs().sum() > 0       # w has learnt a say
    pipe = ClipDiffusionPipeline.load(tiny_unet_dir, clip=str(tiny_clip_dir), device="cpu", runtime="torch",
                                      fast=Path(str(out) + "_export"))
    assert pipe.generate(images_per_prompt(["a rose"], 2.0, 0, 2), 2, "fast").images.shape == (2, 3, 16, 16)


def test_train_fast_resumes_to_the_same_weights(embedded, tiny_unet_dir):
    straight, stopped = embedded["work"] / "straight", embedded["work"] / "stopped"
    train_fast.main(train_args(embedded, tiny_unet_dir, straight, 4))
    train_fast.main(train_args(embedded, tiny_unet_dir, stopped, 2))
    train_fast.main(train_args(embedded, tiny_unet_dir, stopped, 4))
    assert [r[0] for r in LossLog(stopped / "loss.csv").rows()] == [1, 2, 3, 4]
    for name in ("model.safetensors", "ema.safetensors"):
        a, b = load_file(str(straight / name)), load_file(str(stopped / name))
        assert all(torch.equal(a[k], b[k]) for k in a), name


def test_train_fast_continues_an_exported_student_and_its_record(embedded, tiny_unet_dir):
    """--init starts from an exported student, not the teacher: its weights, and the training record of both runs;
    a student of other settings is refused in words."""
    first = embedded["work"] / "first"
    train_fast.main(train_args(embedded, tiny_unet_dir, first, 2))
    exported = Path(str(first) + "_export")
    student, earlier = load_fast(exported)
    start, _ = train_fast.start_student(None, earlier, str(exported))
    assert all(torch.equal(a, b) for a, b in zip(start.state_dict().values(), student.state_dict().values()))
    more = embedded["work"] / "more"
    train_fast.main(train_args(embedded, tiny_unet_dir, more, 3, "--init", str(exported)))
    _, config = load_fast(Path(str(more) + "_export"))
    assert config.training["steps"] == 2 + 3 and config.training["images_seen"] == (2 + 3) * 4   # batch 4
    assert "then 3 steps continued" in config.training["hardware"]
    with pytest.raises(CheckpointError, match="w_scale"):
        train_fast.main(train_args(embedded, tiny_unet_dir, embedded["work"] / "never", 1, "--init", str(exported),
                                   "--w-scale", "7"))


def test_train_fast_refuses_embeddings_of_another_clip(embedded, tmp_path, tiny_clip_dir):
    from clipdiff.testing import make_tiny_unet

    other = make_tiny_unet(tmp_path / "unet", "another-clip")
    with pytest.raises(CheckpointError, match="another-clip"):
        train_fast.main(train_args(embedded, other, tmp_path / "never", 1))


def test_every_train_fast_default_is_a_flag():
    parser = train_fast.build_parser()
    for key, value in train_fast.fast_defaults().items():
        assert getattr(parser.parse_args([]), key) == value


# -- the app -------------------------------------------------------------------------------------------------------
def app_context(models):
    pytest.importorskip("gradio")
    from clipdiff.app.context import Context

    return Context.create(models, preview_every_s=0)


@pytest.fixture(scope="module")
def fast_models(tiny_clip_dir, tiny_unet_dir, fast_dir):
    """The app's models with the fast mode (app.py --fast DIR)."""
    pytest.importorskip("gradio")
    from clipdiff.app.context import Models

    models = Models.load(tiny_unet_dir, str(tiny_clip_dir), None, None, "cpu", runtime="torch", fast=fast_dir)
    assert models.problems == []
    return models


def test_the_app_offers_the_fast_sampler_only_when_asked_and_loaded(fast_models, tiny_models, tiny_clip_dir,
                                                                    tiny_unet_dir, tmp_path):
    from clipdiff.app.context import Models
    from clipdiff.schedulers import SAMPLERS

    assert tiny_models.samplers == SAMPLERS and "fast" not in tiny_models.samplers     # the teaching default
    assert fast_models.samplers == (*SAMPLERS, "fast")
    assert "fast mode `fast" in fast_models.status_markdown()
    missing = Models.load(tiny_unet_dir, str(tiny_clip_dir), None, None, "cpu", runtime="torch",
                          fast=tmp_path / "nothing")
    assert missing.pipeline is not None and missing.samplers == SAMPLERS, "the app runs without it"
    assert len(missing.problems) == 1 and missing.problems[0].startswith("No fast mode: no fast-mode student in")
    assert "--fast DIR" in missing.problems[0] and "fast mode" in missing.status_markdown()


def test_the_app_generates_in_the_fast_mode_and_playback_says_it_needs_the_teacher(fast_models):
    from clipdiff.app.tabs import generate, playback

    ctx = app_context(fast_models)
    updates = list(generate.generate(ctx, "a red rose", 2.0, 4, "fast", 3, 2))
    gallery, status, seed, run = updates[-1]
    assert status.startswith("Done: 2 image(s), seed 3, 4 fast steps in ") and "Fast mode: a student" in status
    assert [u[1] for u in updates[:-1]] == [f"Sampling: step {k} of 4" for k in (1, 2, 3)]
    params = [read_params(Image.open(path)) for path, _ in gallery]
    assert all(p["sampler"] == "fast" and p["model"] == fast_models.pipeline.student_id for p in params)
    shown = playback.show_playback(ctx, run)
    assert shown[-1]["visible"] is True and "Playback needs the teacher U-Net" in shown[-1]["value"]
    assert shown[2] is None, "the previous run's frame goes"
    with pytest.raises(gr_error(), match="Playback needs the teacher"):
        playback.gif(ctx, run, 0)
    # the teacher's run after it plays back as before
    teacher_run = list(generate.generate(ctx, "a red rose", 2.0, 4, "ddim", 3, 1))[-1][3]
    assert playback.show_playback(ctx, teacher_run)[-1]["visible"] is False


def gr_error():
    import gradio as gr

    return gr.Error


@pytest.mark.parametrize("call, feature", [
    (lambda ctx, tabs: tabs.generate.generate(ctx, "a rose", 2.0, 4, "fast", 0, 1, "red"), "A negative prompt"),
    (lambda ctx, tabs: tabs.generate.generate(ctx, "[a daisy:a sunflower:0.5]", 2.0, 4, "fast", 0, 1),
     "Prompt editing"),
    (lambda ctx, tabs: tabs.debug.prompt_edit(ctx, "a daisy", "a sunflower", "0, 0.5", 0, 2.0, 4, "fast"),
     "Prompt editing"),
    (lambda ctx, tabs: tabs.photo.edit_photo(ctx, None, True, "a rose", 0.6, 2.0, 0, 4, "fast", "", tabs.last_run),
     "Editing a photo"),
])
def test_the_teachers_features_are_refused_in_the_tabs_status(fast_models, call, feature):
    """A refusal (gr.Error, which the page's status says, wiring.said_in_status), naming what needs the teacher."""
    from types import SimpleNamespace

    from clipdiff.app.errors import said_in_status
    from clipdiff.app.runs import RunStatus
    from clipdiff.app.tabs import debug, generate, photo

    ctx = app_context(fast_models)
    last_run = list(generate.generate(ctx, "a red rose", 2.0, 4, "ddim", 3, 1))[-1][3]
    tabs = SimpleNamespace(generate=generate, debug=debug, photo=photo, last_run=last_run)
    status = object()
    outputs = []
    with pytest.raises(gr_error(), match=f"{feature}.* needs the teacher U-Net"):
        for update in said_in_status(lambda: call(ctx, tabs), [object(), status], status)():
            outputs.append(update)
    said = outputs[-1][-1]
    assert isinstance(said, RunStatus) and said.refused and f"{feature}" in said and "needs the teacher U-Net" in said


def test_without_the_fast_mode_the_app_refuses_it_and_says_how_to_get_it(tiny_models):
    from clipdiff.app.tabs import generate

    with pytest.raises(gr_error(), match="The fast mode is not loaded \\(it is opt-in: app.py --fast\\)"):
        list(generate.generate(app_context(tiny_models), "a rose", 2.0, 4, "fast", 0, 1))


def test_the_steps_follow_the_sampler_between_the_fast_mode_and_the_teacher():
    pytest.importorskip("gradio")
    from clipdiff.app.controls import steps_for_sampler
    from clipdiff.app.inputs import Checked

    assert steps_for_sampler("fast", 12) == 4 and steps_for_sampler("dpmsolver-karras", 4) == 12
    assert not isinstance(steps_for_sampler("fast", 2), int) and not isinstance(steps_for_sampler("ddim", 20), int)
    checked = Checked(quiet=True)
    assert checked.sampling(2.0, 0, 12, "fast").steps == 4
    assert checked.notes == ["The fast sampler takes 1 to 8 steps: using 4."]


# -- eval-gen ------------------------------------------------------------------------------------------------------
def test_eval_gen_adds_the_fast_modes_rows_beside_the_teachers(tmp_path, tiny_clip_dir, tiny_unet_dir, fast_dir):
    from clipdiff.__main__ import main as clipdiff_main

    out = tmp_path / "gen.json"
    assert clipdiff_main(["eval-gen", "--w", "2", "--n", "2", "--json", str(out), "--unet", str(tiny_unet_dir),
                          "--clip", str(tiny_clip_dir), "--real", "none", "--steps", "3", "--sampler", "ddim",
                          "--device", "cpu", "--fast", str(fast_dir)]) == 0
    runs = json.loads(out.read_text())["runs"]
    assert [(r["sampler"], r["steps"]) for r in runs] == [("ddim", 3), ("fast", 4), ("fast", 2)]
    assert runs[1]["model"] == f"{model_id_of(fast_dir)} (fast, 4 steps)"
    assert runs[1]["results"][0]["clip_score"] != runs[0]["results"][0]["clip_score"]
    lo, hi = json.loads((fast_dir / "config.json").read_text())["w_range"]
    assert all((r["w_response"]["w_from"], r["w_response"]["w_to"]) == (lo, hi) for r in runs)
    assert runs[0]["w_response"]["uint8_levels"] > 0, "the teacher's pictures change with w"


def test_w_response_is_zero_when_w_does_not_change(tiny_pipeline):
    from clipdiff.evaluate import w_response

    assert w_response(tiny_pipeline, ["a red rose"], 2, steps=2, sampler="ddim", w_from=2, w_to=2) == 0
    assert w_response(tiny_pipeline, ["a red rose"], 2, steps=2, sampler="ddim", w_from=0, w_to=4) > 0


def test_fast_vs_teacher_divides_each_fast_rows_fd_by_the_teachers_at_its_w():
    from clipdiff.commands.cli_eval import fast_vs_teacher

    def run(sampler, steps, fd, accuracy):
        return {"model": f"{sampler} {steps}", "sampler": sampler, "steps": steps,
                "species": [{"w": 2.0, "fd": fd, "accuracy": accuracy}]}
    ratios = fast_vs_teacher([run("dpmsolver-karras", 12, 10.0, 0.75), run("fast", 4, 13.0, 0.7),
                              run("fast", 2, 16.0, 0.6)])
    assert [(r["steps"], r["fd_ratio"], r["accuracy"], r["teacher_accuracy"]) for r in ratios] == [
        (4, 1.3, 0.7, 0.75), (2, 1.6, 0.6, 0.75)]


def test_bench_times_the_fast_mode_beside_the_teacher(tmp_path, tiny_clip_dir, tiny_unet_dir, fast_dir):
    from clipdiff.commands.bench import main as bench_main

    out = tmp_path / "bench.json"
    assert bench_main(["--quick", "--unet", str(tiny_unet_dir), "--clip", str(tiny_clip_dir), "--atlas",
                       str(tmp_path / "none"), "--skip-app", "--skip-reference", "--skip-runtimes", "--steps", "3",
                       "--threads", "1", "--runtime", "torch", "--fast", str(fast_dir), "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["generate_4_s"] > 0 and result["generate_4_s_fast"] > 0
    assert result["fast_steps"] == 4 and result["fast_model"] == model_id_of(fast_dir)


def test_the_fast_table_puts_the_student_beside_its_teacher():
    from clipdiff import claims

    def run(sampler, steps, fd, accuracy, model, levels):
        return {"model": model, "sampler": sampler, "steps": steps,
                "species": [{"w": 2.0, "fd": fd, "accuracy": accuracy}],
                "w_response": {"w_from": 0.0, "w_to": 4.0, "uint8_levels": levels}}
    report = {"runs": [run("dpmsolver-karras", 12, 15.0, 0.75, "unet-a", 34.12),
                       run("fast", 4, 19.5, 0.7, "fast-b (fast, 4 steps)", 4.31),
                       run("fast", 2, 24.0, 0.6, "fast-b (fast, 2 steps)", 3.0)]}
    bench = {"generate_4_s": 0.634, "generate_4_s_fast": 0.1, "fast_steps": 4, "model": "unet-a",
             "fast_model": "fast-b"}
    rows = claims.fast_table(report, bench)
    assert "| w 0 -> 4 changes pictures by |" in rows[0]
    assert rows[2:] == ["| dpmsolver-karras (teacher) | 12 | 24 | 15.0 | 1.00x | 0.750 | 34.1 uint8 levels | 0.63 s |",
                        "| fast (student) | 4 | 4 | 19.5 | 1.30x | 0.700 | 4.3 uint8 levels | 0.10 s |",
                        "| fast (student) | 2 | 2 | 24.0 | 1.60x | 0.600 | 3.0 uint8 levels | - |"]


def test_the_student_runs_on_the_default_runtime_as_eager(teacher, tmp_path):
    """The student's condition rows are one wider (w): ONNX Runtime takes them, checked against eager at load, and
    answers as the eager student does."""
    pytest.importorskip("onnxruntime")
    from clipdiff.runtimes import Runtime, runtime_of, with_runtime

    student, _ = student_of(teacher)
    served = with_runtime(student, "onnx", "fp32", cache_dir=tmp_path)
    assert runtime_of(served) == Runtime("onnx", "fp32")
    g, size = torch.Generator().manual_seed(1), student.config.image_size
    x, t = torch.randn(4, 3, size, size, generator=g), torch.tensor([5, 50, 150, 300])
    cond = torch.randn(4, student.cond_dim, generator=g)
    with torch.inference_mode():
        assert (served(x, t, cond) - student(x, t, cond)).abs().max() < 1e-5


def test_the_shipped_students_figures_were_measured_on_it(monkeypatch):
    """The README's and the card's fast table come from reports of the shipped student and teacher (tests/test_claims
    checks the lines); a report of other weights is named as stale."""
    from clipdiff import claims

    assert claims.stale_fast(claims.shipped_model_ids()["unet"]) == []
    report, bench = claims.fast_claims()
    monkeypatch.setattr(claims, "fast_claims", lambda: (report, {**bench, "fast_model": "fast-0000000000"}))
    stale = claims.stale_fast(claims.shipped_model_ids()["unet"])
    assert len(stale) == 1 and stale[0].startswith("bench_fast.json: measured on") and "fast-0000000000" in stale[0]


def test_a_fast_png_loads_into_the_teachers_controls_and_says_so(fast_models):
    """A Radio refuses, at the next click, a value it does not offer: a fast PNG comes back as the teacher's."""
    from clipdiff.app.inputs import Checked
    from clipdiff.app.tabs import generate

    ctx = app_context(fast_models)
    gallery = list(generate.generate(ctx, "a red rose", 3.0, 2, "fast", 5, 1))[-1][0]
    assert generate.load_params(gallery[0][0]) == ("a red rose", 3.0, 12, "dpmsolver-karras", 5, 1)
    checked = Checked(quiet=True)
    generate.parameters_to_controls(read_params(Image.open(gallery[0][0])), checked)
    assert checked.notes == ["Made in the fast mode: loaded with the teacher's dpmsolver-karras sampler and 12 steps "
                             "(pick fast again where the app offers it)."]
