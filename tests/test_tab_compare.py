"""The Compare runs tab and the session's history, called as functions on real runs: no server."""
from __future__ import annotations

import pytest

gr = pytest.importorskip("gradio")

from clipdiff.app import history as history_module  # noqa: E402
from clipdiff.app.history import History, release_history  # noqa: E402
from clipdiff.app.limits import MAX_PINNED  # noqa: E402
from clipdiff.app.tabs import compare as tab  # noqa: E402
from clipdiff.app.tabs import debug, generate  # noqa: E402


def make_run(ctx, prompt: str, w: float = 2.0, seed: int = 3):
    return list(generate.generate(ctx, prompt, w, 2, "ddim", seed, 2))[-1][3]


def test_every_run_is_listed_newest_first_and_pinned_runs_show_side_by_side(ctx):
    first, second = make_run(ctx, "A red rose"), make_run(ctx, "A <b>white</b> daisy", w=0.5, seed=9)
    history, runs, shown, pick = tab.record_run(first, None)
    history, runs, shown, pick = tab.record_run(second, history)
    assert tab.record_run(second, history)[0].entries == history.entries, "a run is listed once"
    labels = [label for label, _ in runs["choices"]]
    assert labels[0].startswith("#2 at ")
    assert "A <b>white</b> daisy | w 0.5 | 2 ddim steps | seed 9 (+1 per image)" in labels[0]
    assert labels[1].startswith("#1 at ") and runs["value"] == [] and shown == tab.NOTHING_PINNED

    history, runs, shown, pick = tab.pin_runs(history, [1, 2])
    assert runs == gr.skip() and shown.count('class="compare-run"') == 2, "the ticks stand as clicked"
    assert shown.index("compare-run-2") < shown.index("compare-run-1"), "newest first, as the list"
    assert shown.count("<img src=\"data:image/png;base64,") == 4, "each run's two images"
    assert "&lt;b&gt;white&lt;/b&gt;" in shown and "<b>white</b>" not in shown, "prompts are escaped"
    assert "<dt>w</dt><dd>0.5</dd>" in shown and "<dt>seed</dt><dd>9 (+1 per image)</dd>" in shown
    assert [n for _, n in pick["choices"]] == [2, 1] and pick["value"] == 2

    opened, switch = tab.open_run(history, 1)
    assert opened is first and switch.selected == "playback"
    with pytest.raises(gr.Error, match="Pick one of your pinned runs"):
        tab.open_run(tab.pin_runs(history, [2])[0], 1)


def test_a_run_says_its_negative_prompt_its_prompt_switch_and_a_strip_its_fractions_and_one_seed(ctx):
    negative = list(generate.generate(ctx, "A rose", 2.0, 2, "ddim", 4, 1, "red <i>petals</i>"))[-1][3]
    switch = list(generate.generate(ctx, "[A daisy:A sunflower:0.5]\nA rose", 2.0, 2, "ddim", 4, 1))[-1][3]
    strip = list(debug.prompt_edit(ctx, "A daisy", "A sunflower", "0, 0.5, 1", 7, 2.0, 2, "ddim"))[-1][-1]
    history = None
    for run in (negative, switch, strip):
        history, *_ = tab.record_run(run, history)
    history, _, shown, _ = tab.pin_runs(history, [1, 2, 3])
    labels = {n: label for label, n in tab.view(history)[0]["choices"]}
    assert "A rose | negative: red <i>petals</i> | w 2 | 2 ddim steps | seed 4" in labels[1]
    assert "[A daisy:A sunflower:0.5] (+1 more) | w 2" in labels[2] and "negative" not in labels[2]
    assert "[A daisy:A sunflower:f], f = 0, 0.5, 1 | w 2 | 2 ddim steps | seed 7 (every image)" in labels[3]
    run_3, run_2, run_1 = shown.split('<div class="compare-run"')[1:]       # newest first
    assert "<dt>negative prompt</dt><dd>red &lt;i&gt;petals&lt;/i&gt;</dd>" in run_1
    assert "<dt>prompts</dt><dd>[A daisy:A sunflower:0.5]<br>A rose</dd>" in run_2
    assert "<dt>negative prompt</dt><dd>none (the learned null)</dd>" in run_2
    assert "<dt>prompts</dt><dd>[A daisy:A sunflower:f], f = 0, 0.5, 1</dd>" in run_3
    assert "<dt>seed</dt><dd>7 (every image)</dd>" in run_3, "a strip's images share one seed"


def test_at_most_so_many_pinned_and_only_the_newest_runs_keep_their_steps(ctx, monkeypatch):
    history = History()
    runs = [make_run(ctx, f"flower {k}", seed=k) for k in range(MAX_PINNED + 2)]
    for run in runs[:2]:
        history.add(run)
    history.pin([1])
    monkeypatch.setattr(history_module, "HISTORY_FRAME_BYTES", runs[0].playback.nbytes * 2)
    for run in runs[2:]:
        history.add(run)
    kept = [e.number for e in history.entries if e.run.playback.records]
    assert kept == [1, MAX_PINNED + 2], "the pinned run and the newest keep their steps; the rest go, oldest first"
    with pytest.raises(gr.Error, match="steps were dropped"):
        tab.open_run(tab.pin_runs(history, [1, 2])[0], 2)
    _, ticks, _, _ = tab.pin_runs(history, list(range(1, MAX_PINNED + 3)))
    assert [e.number for e in history.pinned] == list(range(3, MAX_PINNED + 3)), "the newest MAX_PINNED"
    assert ticks["value"] == list(range(3, MAX_PINNED + 3)), "ticks past the limit are taken back"
    release_history(history)
    assert all(not e.run.playback.records for e in history.entries)
