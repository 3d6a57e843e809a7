"""The Tour tab: the lesson's experiments (clipdiff.tour) as buttons. A button fills the controls of the tabs its
run uses, switches to the run's tab, then runs those tabs' own handlers, the Generate step first: a loop over the
tabs, which each say what a tour setting puts into their controls (tour_fill) and what then runs (tour_steps).

The experiment's explanation goes with the attendee: a note above the tabs shows it on the tab the button lands on
(only there: switching to another tab hides it, coming back shows it again), with a way back to the tour. Its
explanation folds away, leaving one line. Before a button overwrites the attendee's own prompts, settings and the
results its handlers redraw, they are kept, and "Restore my settings" puts them back."""
from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType

import gradio as gr

from ... import tour
from ..context import LIGHT_GROUP, Context
from ..page import scroll_to
from ..wiring import PRIVATE, Call, Shared

TOUR_INTRO = """## New here? Start with the tour
Each experiment below sets up one of the other tabs and runs it: you land on the result and can keep
changing settings from there. Every run takes a few seconds on a laptop with the shipped models."""


@dataclass
class TourTab:
    buttons: list[tuple[gr.Button, tour.Experiment, tour.Run]]


@dataclass
class TourNote:
    """Above the tabs, shown by a tour button on its run's tab: what the experiment is about (folding away to its title),
    the way back, the attendee's settings."""
    box: gr.Row
    details: gr.Accordion          # labelled with the experiment's title; the explanation inside
    text: gr.Markdown
    experiment: gr.Textbox          # hidden: the experiment's id, for the way back to its place in the tour
    back: gr.Button
    restore: gr.Button
    hide: gr.Button
    saved: gr.State                 # {index into the kept components: the attendee's value}, until restored
    tab: gr.State                   # the id of the tab the note belongs to; None once hidden


def build() -> TourTab:
    with gr.Tab("Tour", id="tour"):
        gr.Markdown(TOUR_INTRO)
        buttons = []
        for experiment in tour.EXPERIMENTS:
            with gr.Row(equal_height=False, elem_id=f"tour-{experiment.id}"):
                with gr.Column(scale=5):
                    gr.Markdown(f"### {experiment.title}\n{experiment.explanation}")
                with gr.Column(scale=1, min_width=200):
                    for i, run in enumerate(experiment.runs):
                        button = gr.Button(run.label, size="sm", variant="primary" if i == 0 else "secondary",
                                           elem_id=f"tour-{experiment.id}-{i}")
                        buttons.append((button, experiment, run))
    return TourTab(buttons)


def build_note() -> TourNote:
    with gr.Row(visible=False, elem_id="tour-note", equal_height=False) as box:
        with gr.Column(scale=3, min_width=300):
            with gr.Accordion("Tour", open=True, elem_id="tour-note-details") as details:
                text = gr.Markdown(elem_id="tour-note-text")
        with gr.Row(elem_id="tour-note-buttons"):
            back = gr.Button("Back to the tour", size="sm", min_width=0, elem_id="tour-back")
            restore = gr.Button("Restore my settings", size="sm", min_width=0, elem_id="tour-restore")
            hide = gr.Button("Hide", size="sm", min_width=0, elem_id="tour-hide")
    experiment = gr.Textbox(visible=False)
    return TourNote(box, details, text, experiment, back, restore, hide, gr.State(None), gr.State(None))


def note_title(experiment: tour.Experiment, run: tour.Run) -> str:
    button = f' ("{run.label}")' if len(experiment.runs) > 1 else ""
    return f"Tour: {experiment.title}{button}"


def kept(saved, keys: list[int], current: list) -> dict:
    """The attendee's values of the controls a button is about to set and of the results it redraws, added to what
    is kept already: a second tour button keeps the attendee's values, not the first button's."""
    saved = dict(saved) if isinstance(saved, dict) else {}
    for key, value in zip(keys, current):
        saved.setdefault(key, value)
    return saved


def restore(saved, count: int) -> list:
    """The kept values back into their controls and results (the rest stay), and nothing kept any more."""
    if not isinstance(saved, dict) or not saved:
        gr.Info("Nothing to restore: no tour button has changed your settings since you last restored them.")
        return [gr.skip()] * count + [None]
    gr.Info("Your prompts, settings and results are back.")
    return [saved.get(k, gr.skip()) for k in range(count)] + [None]


def plan(ctx: Context, run: tour.Run, shared: Shared, tabs: dict[ModuleType, object]) -> tuple[dict, list[Call]]:
    """What one button does: the control values it sets, and the handlers it then runs in order."""
    values, calls = {}, []
    for setting in (run.generate, run.then):
        if setting is None:
            continue
        module = next(m for m in tabs if isinstance(setting, m.TAKES))
        values.update(module.tour_fill(tabs[module], setting))
        calls += module.tour_steps(ctx, tabs[module], shared, setting)
    return values, calls


def results(calls: list[Call], shared: Shared) -> list:
    """What a button's own handlers redraw, to keep for "Restore my settings": their outputs, but not the session's
    States nor what follows every new run (the playback, the ranking, the history: they show the session's last run,
    which stays the tour's)."""
    own = [call for call in calls if not any(call is c for c in shared.after_run)]
    shown = [o for call in own for o in (call.outputs if isinstance(call.outputs, list) else [call.outputs])]
    return list({id(o): o for o in shown if not isinstance(o, gr.State)}.values())


def setter(tab_switcher: gr.Tabs, note: TourNote, experiment: tour.Experiment, run: tour.Run, values: dict,
           keys: list[int]):
    """A handler that keeps the attendee's values of the components `keys` names (the controls it sets, then the
    results it redraws), puts the run's values in, switches to the run's tab and shows the experiment's note there,
    unfolded."""
    def set_up_run(saved, *current) -> dict:
        return {tab_switcher: gr.Tabs(selected=run.tab), **values, note.box: gr.Row(visible=True),
                note.details: gr.Accordion(label=note_title(experiment, run), open=True),
                note.text: experiment.explanation, note.experiment: experiment.id, note.tab: run.tab,
                note.saved: kept(saved, keys, list(current))}
    return set_up_run


# where each kind of run shows its result: the page scrolls there, under the note, once the button has landed (the
# playback: its controls, the picture under them)
RESULTS = {tour.Generate: "#gallery", tour.Playback: "#pb-controls", tour.Sweep: "#sweep-grid",
           tour.Similarity: "#similarity-plot", tour.Map: "#map-plot", tour.Interpolate: "#ip-strip",
           tour.Mix: "#mix-strip", tour.Vary: "#va-gallery", tour.PromptEdit: "#pe-strip", tour.Words: "#wi-strip",
           tour.ForwardNoise: "#fw-strip", tour.EditPhoto: "#ed-strip"}


def back_to_tour():
    """The Tour tab, at the experiment (BACK_TO_EXPERIMENT scrolls there), whose text replaces the note."""
    return gr.Tabs(selected="tour"), gr.Row(visible=False), None


def shown_on(tab_id: str):
    """What selecting a tab does to the note: shown on the tab its run opened, hidden on every other."""
    def selected(note_tab) -> gr.Row:
        return gr.Row(visible=note_tab == tab_id)
    return selected


BACK_TO_EXPERIMENT = """(id) => { setTimeout(() => document.getElementById('tour-' + id)
  ?.scrollIntoView({behavior: 'smooth', block: 'center'}), 300); }"""


def wire(ctx: Context, page: TourTab, shared: Shared, tabs: dict[ModuleType, object], note: TourNote) -> None:
    plans = [(button, experiment, run, values, calls, results(calls, shared))
             for button, experiment, run in page.buttons for values, calls in [plan(ctx, run, shared, tabs)]]
    settable = list({id(c): c for *_, values, _, shown in plans for c in [*values, *shown]}.values())
    index = {id(c): k for k, c in enumerate(settable)}
    for button, experiment, run, values, calls, shown in plans:
        kept_now = [*values, *(c for c in shown if c not in values)]
        keys = [index[id(c)] for c in kept_now]
        event = button.click(setter(shared.tabs, note, experiment, run, values, keys), [note.saved, *kept_now],
                             [shared.tabs, *values, note.box, note.details, note.text, note.experiment, note.tab,
                              note.saved], **PRIVATE, **LIGHT_GROUP)
        event.success(None, js=scroll_to(RESULTS[type(run.then or run.generate)]), **PRIVATE)
        for call in calls:
            event = call.on(event.success, **PRIVATE)
    note.restore.click(lambda saved: restore(saved, len(settable)), note.saved, [*settable, note.saved], **PRIVATE,
                       **LIGHT_GROUP)
    note.back.click(back_to_tour, None, [shared.tabs, note.box, note.tab], **PRIVATE, **LIGHT_GROUP).then(
        None, note.experiment, None, js=BACK_TO_EXPERIMENT, **PRIVATE)
    note.hide.click(lambda: (gr.Row(visible=False), None), None, [note.box, note.tab], **PRIVATE, **LIGHT_GROUP)
    for tab in shared.tabs.children:     # the attendee's own clicks on a tab (a tour button's switch fires none)
        tab.select(shown_on(tab.id), note.tab, note.box, **PRIVATE, **LIGHT_GROUP)
