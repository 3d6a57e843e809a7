"""The model card is rendered from recorded files: the shipped card is exactly what the writer makes of the shipped
models' files and their stages' records, and a record's change shows in the card."""
from __future__ import annotations

import json
import shutil

from clipdiff.checkpoints import CHECKPOINTS_DIR
from clipdiff.training.model_card import render_model_card, write_model_card
from clipdiff.training.recipe import RECORDS_NAME


def test_the_shipped_card_is_what_the_writer_renders_from_the_shipped_records():
    assert (CHECKPOINTS_DIR / "README.md").read_text() == render_model_card(), \
        "checkpoints/README.md differs from its rendering: run write_model_card() after changing what it reads"


def test_the_card_says_which_machine_trained_each_stage_and_for_how_long(tmp_path):
    """A card rendered from other records says their machines, times and notes (no weights: no ids yet)."""
    for name in ("clip/training.json", "clip/eval.json", "unet/config.json", RECORDS_NAME):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(CHECKPOINTS_DIR / name, tmp_path / name)
    records = json.loads((tmp_path / RECORDS_NAME).read_text())
    records["stages"][-1].update(machine="a borrowed laptop", train_seconds=5 * 3600, notes=["left on overnight"])
    (tmp_path / RECORDS_NAME).write_text(json.dumps(records))
    card = write_model_card(tmp_path).read_text()
    assert "| a borrowed laptop | 5.0 h (time-boxed to 45 min) |" in card
    assert "- unet-3: left on overnight" in card
    assert "`(none yet)` (U-Net)" in card
