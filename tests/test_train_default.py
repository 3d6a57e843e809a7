"""train-default: its defaults are the stages that shipped (the records beside the checkpoints), --help and
--dry-run say them, and a tiny end-to-end run trains every stage, installs the last ones, writes the records and the
card, skips what is done and resumes a stage that is asked for more steps."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from clipdiff.checkpoints import CHECKPOINTS_DIR, PROJECT_ROOT
from clipdiff.diffusion import load_diffusion
from clipdiff.pipeline import ClipDiffusionPipeline, Job
from clipdiff.testing import make_image_folder, tiny_training_flags
from clipdiff.training import recipe, train_clip, train_default, train_unet
from clipdiff.training.common import LossLog
from clipdiff.training.recipe import SHIPPED_STAGES, Stage, load_records, stage_of

TINY_CLIP, TINY_UNET = tiny_training_flags()


def tiny_argv(work: Path, images: Path, *extra: str) -> list[str]:
    """The shipped recipe's stages at 2 steps of 4 images each, tiny models, this work folder for everything."""
    argv = ["--data", str(images), "--runs", str(work / "runs"), "--checkpoints", str(work / "ckpt"),
            "--assets", str(work / "assets"), "--atlas", "no", "--device", "cpu",
            f"--clip-flags={TINY_CLIP}", f"--unet-flags={TINY_UNET}"]
    for s in SHIPPED_STAGES:
        argv += [f"--{s.name}-steps", "2", f"--{s.name}-batch-size", "4"]
    return argv + list(extra)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> dict:
    work = tmp_path_factory.mktemp("train_default")
    images = make_image_folder(work / "images")
    train_default.main(tiny_argv(work, images))
    return {"work": work, "images": images}


def refuse_training(monkeypatch) -> None:
    def refuse(args):
        raise AssertionError(f"trained {args.out} again")
    monkeypatch.setattr(train_clip, "train", refuse)
    monkeypatch.setattr(train_unet, "train", refuse)


# -- the recipe is what shipped --------------------------------------------------------------------------------

def test_the_recipe_is_the_stages_the_model_card_lists():
    """train-default's stages equal the shipped records, which the card is rendered from."""
    records = load_records()["stages"]
    assert [stage_of(r) for r in records] == list(SHIPPED_STAGES)
    assert recipe.check_order(SHIPPED_STAGES) == []
    card = (CHECKPOINTS_DIR / "README.md").read_text()
    for r in records:
        assert f"| {r['name']} | {r['init_from'] or 'scratch'} |" in card
        assert f"{r['steps']:,} x {r['batch_size']}" in card and recipe.machine_text(r) in card


def test_the_other_settings_of_the_shipped_models_are_the_trainers_defaults():
    """What the stages do not set (architecture, loss, augmentation) is train-clip's and train-unet's defaults."""
    clip_card = json.loads((CHECKPOINTS_DIR / "clip" / "training.json").read_text())
    defaults = train_clip.build_parser().parse_args([])
    assert clip_card["architecture"] == train_clip.model_config(defaults)
    stage_set = {"lr", "warmup_steps", "max_steps", "batch_size", "init_from", "data", "max_seconds", "save_every",
                 "eval_every"}     # the stage settings (max_seconds: the time box its record notes), bookkeeping
    assert {k: v for k, v in clip_card["args"].items() if k not in stage_set} == \
           {k: v for k, v in vars(defaults).items() if k in clip_card["args"] and k not in stage_set}
    unet_cfg = json.loads((CHECKPOINTS_DIR / "unet" / "config.json").read_text())
    u = train_unet.unet_defaults()
    assert {k: unet_cfg["unet"][k] for k in ("block_out_channels", "layers_per_block", "attention_head_dim",
                                             "norm_num_groups", "null_mode", "cond_drop_prob")} == \
           {k: u[k] for k in ("block_out_channels", "layers_per_block", "attention_head_dim", "norm_num_groups",
                              "null_mode", "cond_drop_prob")}
    assert [int(a) for a in unet_cfg["unet"]["attention_levels"]] == u["attention_levels"]
    assert {k: unet_cfg["training"][k] for k in ("loss_weighting", "snr_gamma", "flip_prob")} == \
           {k: u[k] for k in ("loss_weighting", "snr_gamma", "flip_prob")}


def test_help_lists_every_stage_setting_with_its_shipped_value(capsys):
    with pytest.raises(SystemExit):
        train_default.main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    for s in SHIPPED_STAGES:
        assert f"stage {s.name}: the {recipe.MODELS[s.model]}" in text
        for key, value in s.settings().items():
            assert f"--{s.name}-{key.replace('_', '-')}" in text
            assert f"(default: {'none' if value is None else value})" in text
    for flag in ("--stages", "--device", "--dry-run", "--clip-flags", "--unet-flags"):
        assert flag in text


def test_stage_flags_replace_the_defaults():
    args = train_default.build_parser().parse_args(["--unet-3-steps", "9", "--clip-2-init-from", "none"])
    stages = {s.name: s for s in train_default.stages_from_args(args)}
    assert stages["unet-3"].steps == 9 and stages["clip-2"].init_from is None
    assert stages["unet-2"] == {s.name: s for s in SHIPPED_STAGES}["unet-2"]


def test_a_table_out_of_order_is_refused_in_words():
    stages = (Stage("unet-1", "unet", None, 1, 1, 1e-3, 0, 0.9, conditions="clip-1"),
              Stage("clip-1", "clip", None, 1, 1, 1e-3, 0))
    assert recipe.check_order(stages) == ["unet-1 needs clip-1, which comes after it"]
    with pytest.raises(SystemExit):
        train_default.main(["--unet-2-conditions", "unet-1", "--dry-run"])


# -- the plan and its estimates ---------------------------------------------------------------------------------

def test_dry_run_prints_every_stage_with_its_estimate(capsys):
    train_default.main(["--dry-run", "--device", "cpu"])
    out = capsys.readouterr().out
    for s in SHIPPED_STAGES:
        assert any(line.startswith(s.name) and f"{s.steps:,}" in line and "s/step" in line for line in out.splitlines())
    assert "training steps in all:" in out and "not timed" in out


def test_estimates_come_from_measured_seconds_per_step():
    """CPU: benchmarks/step_cost.json's recipe of the same model and batch; GPU: a shipped GPU run of the same
    model, at the same batch when there is one, else said to be assumed."""
    records = load_records()["stages"]
    costs = recipe.step_costs()
    stages = {s.name: s for s in SHIPPED_STAGES}
    cpu = recipe.estimate(stages["clip-1"], "cpu", records, costs)
    assert cpu.seconds == pytest.approx(2000 * costs["clip-resnet"]) and "step_cost.json" in cpu.source
    gpu = recipe.estimate(stages["clip-1"], "cuda", records, costs)
    assert gpu.seconds == pytest.approx(2000 * 150 / 4208) and "measured" in gpu.source and "clip-2" in gpu.source
    assumed = recipe.estimate(stages["unet-3"], "cuda", records, costs)
    assert "assumed" in assumed.source and assumed.seconds == pytest.approx(1801 * 175 / 2521)
    unknown = recipe.estimate(Stage("clip-9", "clip", None, 10, 99, 1e-3, 0), "cpu", records, costs)
    assert unknown.seconds is None and str(unknown).startswith("?")


def test_the_readme_says_how_long_the_recipe_takes():
    sentence = recipe.recipe_durations()
    assert " ".join(sentence.split()) in " ".join((PROJECT_ROOT / "README.md").read_text().split())


# -- a tiny end-to-end run ----------------------------------------------------------------------------------------

def test_a_tiny_run_trains_every_stage_and_installs_the_last_ones(tiny_run):
    work = tiny_run["work"]
    ckpt = work / "ckpt"
    for s in SHIPPED_STAGES:
        assert json.loads((work / "runs" / s.name / "state.json").read_text())["step"] == 2
    assert (ckpt / "clip" / "eval.json").is_file()
    model, config = load_diffusion(ckpt / "unet")
    assert config.clip_identity == f"local-dir:{ckpt / 'clip'}"     # conditioned on the installed last CLIP
    assert config.training["steps"] == 2 and "unet-2" in config.training["init_from"]
    pipe = ClipDiffusionPipeline.load(ckpt / "unet", clip=str(ckpt / "clip"), device="cpu")
    images = pipe.generate([Job("a red rose", 2.0, 0)], steps=2, sampler="ddim").images
    assert images.shape == (1, 3, 16, 16) and torch.isfinite(images).all()
    assert (work / "assets" / "loss_unet.csv").is_file() and (work / "assets" / "loss_clip.png").is_file()


def test_a_tiny_run_records_each_stage_and_writes_the_card_from_the_records(tiny_run):
    ckpt = tiny_run["work"] / "ckpt"
    records = json.loads((ckpt / "stages.json").read_text())
    machine = train_default.describe_machine(torch.device("cpu"))
    assert [r["name"] for r in records["stages"]] == [s.name for s in SHIPPED_STAGES]
    assert all(r["machine"] == machine and r["device"] == "cpu" and r["steps"] == 2 and r["batch_size"] == 4
               for r in records["stages"])
    card = (ckpt / "README.md").read_text()
    assert card.count(f"| {machine} |") == len(SHIPPED_STAGES)
    assert "- trained in 2 stages, 16 image-caption pairs seen in all" in card
    assert "- trained in 3 stages, 24 images seen in all" in card


def test_a_second_run_skips_every_finished_stage(tiny_run, monkeypatch, capsys):
    refuse_training(monkeypatch)
    train_default.main(tiny_argv(tiny_run["work"], tiny_run["images"]))
    assert capsys.readouterr().out.count("skipped") == len(SHIPPED_STAGES)


def test_a_stage_asked_for_more_steps_resumes_where_it_stopped(tiny_run, tmp_path, monkeypatch):
    work = tmp_path / "copy"
    shutil.copytree(tiny_run["work"], work)         # keeps file times: what is done stays done
    before = LossLog(work / "runs" / "unet-3" / "loss.csv").rows()
    monkeypatch.setattr(train_clip, "train", lambda args: pytest.fail("a CLIP stage trained again"))
    train_default.main(tiny_argv(work, tiny_run["images"], "--unet-3-steps", "3"))
    after = LossLog(work / "runs" / "unet-3" / "loss.csv").rows()
    assert [r[0] for r in after] == [1, 2, 3] and after[:2] == before
    assert load_diffusion(work / "ckpt" / "unet")[1].training["steps"] == 3
    assert json.loads((work / "ckpt" / "stages.json").read_text())["stages"][-1]["steps"] == 3


def test_a_stage_whose_inputs_have_not_run_is_refused_in_words(tmp_path):
    with pytest.raises(SystemExit, match="unet-2 needs unet-1 and clip-1, not run in"):
        train_default.main(tiny_argv(tmp_path, tmp_path / "images", "--stages", "unet-2"))


def test_a_stage_stopped_early_stops_the_run_and_resumes_next_time(tmp_path):
    """A trainer stopped part way (here by its time box; SIGTERM alike) leaves no record, so no later stage starts
    from it, and the next run goes on from its saved step."""
    images = make_image_folder(tmp_path / "images")
    boxed = [a.replace(TINY_CLIP, TINY_CLIP + " --max-seconds 1e-9") for a in tiny_argv(tmp_path, images)]
    with pytest.raises(SystemExit, match="clip-1 stopped at step 1 of 2"):
        train_default.main(boxed + ["--stages", "clip-1", "clip-2"])
    assert not (tmp_path / "runs" / "clip-1" / "stage.json").exists()
    train_default.main(tiny_argv(tmp_path, images, "--stages", "clip-1"))
    assert [r[0] for r in LossLog(tmp_path / "runs" / "clip-1" / "loss.csv").rows()] == [1, 2]
    assert json.loads((tmp_path / "runs" / "clip-1" / "stage.json").read_text())["steps"] == 2


def test_a_stage_trained_again_makes_the_later_ones_stale(tiny_run, tmp_path, capsys):
    """clip-1 trained again: the card is not rewritten from records of stages that started from the old clip-1, and
    clip-2 refuses to count as done until its run folder is deleted."""
    work = tmp_path / "copy"
    shutil.copytree(tiny_run["work"], work)
    card = (work / "ckpt" / "README.md").read_text()
    train_default.main(tiny_argv(work, tiny_run["images"], "--stages", "clip-1", "--clip-1-steps", "3"))
    assert "clip-2, unet-1, unet-2 started from stages trained again since" in capsys.readouterr().out
    assert (work / "ckpt" / "README.md").read_text() == card
    with pytest.raises(SystemExit, match="clip-2 was trained before clip-1 last changed: delete"):
        train_default.main(tiny_argv(work, tiny_run["images"], "--clip-1-steps", "3"))
