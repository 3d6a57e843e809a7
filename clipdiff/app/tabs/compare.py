"""The Compare runs tab: the session's Generate runs, newest first; pin two or more to see their images and settings
side by side, and open any pinned run in the Denoising playback."""
from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from ..context import Context
from ..errors import answers_clearly
from ..history import History, side_by_side
from ..limits import MAX_PINNED, MAX_RUNS
from ..wiring import PRIVATE, Call, Shared

TAKES = ()          # the tour puts nothing here
HINT = (f"Every Generate run of this session is listed here (the last {MAX_RUNS}). Tick two or more to pin them "
        f"(at most {MAX_PINNED}): pinned runs keep their images, settings and recorded steps, side by side below.")
NOTHING_PINNED = "<p>Tick two or more runs above to see them side by side.</p>"


def view(history: History) -> tuple[dict, str, dict]:
    """The list (pinned ones ticked), the pinned runs side by side, and the runs that can be played back."""
    newest_first = history.entries[::-1]
    runs = gr.update(choices=[(e.label, e.number) for e in newest_first], value=[e.number for e in history.pinned])
    pinned = history.pinned[::-1]     # newest first, as the list: the newest on the left
    shown = side_by_side(pinned) if pinned else NOTHING_PINNED
    playable = [(e.label, e.number) for e in pinned if e.run.playback.records]
    pick = gr.update(choices=playable, value=playable[0][1] if playable else None)
    return runs, shown, pick


@answers_clearly
def record_run(run, history):
    """After every run: it joins the session's history."""
    history = history if isinstance(history, History) else History()
    history.add(run)
    return (history, *view(history))


@answers_clearly
def pin_runs(history, numbers):
    history = history if isinstance(history, History) else History()
    history.pin(numbers)
    runs, shown, pick = view(history)
    if sorted(e.number for e in history.pinned) == sorted(numbers or []):
        runs = gr.skip()    # the ticks stand as clicked: sending them back would undo a tick made meanwhile
    return history, runs, shown, pick


@answers_clearly
def open_run(history, number):
    """A pinned run becomes the session's current run: the playback shows it (and Similarity, the map and the
    ranking use it), and the page switches to the playback."""
    entry = history.find(number) if isinstance(history, History) else None
    if entry is None or not entry.pinned:
        raise gr.Error("Pick one of your pinned runs first.")
    if not entry.run.playback.records:
        raise gr.Error(f"Run #{entry.number}'s recorded steps were dropped to save memory; its images are still "
                       "here. Pinned runs keep their steps from the moment they are pinned.")
    return entry.run, gr.Tabs(selected="playback")


@dataclass
class CompareTab:
    runs: gr.CheckboxGroup
    view: gr.HTML
    pick: gr.Dropdown
    open: gr.Button


def build(ctx: Context) -> CompareTab:
    with gr.Tab("Compare runs", id="compare"):
        gr.Markdown(HINT)
        runs = gr.CheckboxGroup(choices=[], label="runs in this session, newest first (tick to pin; shown below newest first too)", elem_id="runs")
        shown = gr.HTML(NOTHING_PINNED, elem_id="compare")
        with gr.Row(equal_height=True):
            pick = gr.Dropdown(choices=[], label="a pinned run", scale=4, elem_id="compare-pick")
            open_button = gr.Button("Open in Denoising playback", scale=1, elem_id="compare-open")
    return CompareTab(runs, shown, pick, open_button)


def record_call(tab: CompareTab, shared: Shared) -> Call:
    """What follows every new run here: it is listed."""
    return Call(record_run, [shared.last_run, shared.history], [shared.history, tab.runs, tab.view, tab.pick])


def wire(ctx: Context, tab: CompareTab, shared: Shared) -> None:
    Call(pin_runs, [shared.history, tab.runs], [shared.history, tab.runs, tab.view, tab.pick]).on(
        tab.runs.input, **PRIVATE)
    event = Call(open_run, [shared.history, tab.pick], [shared.last_run, shared.tabs]).on(tab.open.click, **PRIVATE)
    for call in shared.after_run:
        event = call.on(event.success, **PRIVATE)


def tour_fill(tab: CompareTab, then) -> dict:
    return {}


def tour_steps(ctx: Context, tab: CompareTab, shared: Shared, then) -> list[Call]:
    return []
