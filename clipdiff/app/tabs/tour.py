"""The Tour tab: the lesson's experiments (clipdiff.tour) as buttons. A button fills the controls of the tabs its
run uses, switches to the run's tab, then runs those tabs' own handlers, the Generate step first: a loop over the
tabs, which each say what a tour setting puts into their controls (tour_fill) and what then runs (tour_steps)."""
from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType

import gradio as gr

from ... import tour
from ..context import LIGHT_GROUP, Context
from ..wiring import PRIVATE, Call, Shared

TOUR_INTRO = """## New here? Start with the tour
Each experiment below sets up one of the other tabs and runs it: you land on the result and can keep
changing settings from there. Every run takes a few seconds on a laptop with the shipped models."""


@dataclass
class TourTab:
    buttons: list[tuple[gr.Button, tour.Run]]


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
                        buttons.append((button, run))
    return TourTab(buttons)


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


def setter(tab_switcher: gr.Tabs, tab_id: str, values: dict):
    """A handler that puts the values into their controls and switches to the run's tab."""
    def set_up_run() -> dict:
        return {tab_switcher: gr.Tabs(selected=tab_id), **values}
    return set_up_run


def wire(ctx: Context, page: TourTab, shared: Shared, tabs: dict[ModuleType, object]) -> None:
    for button, run in page.buttons:
        values, calls = plan(ctx, run, shared, tabs)
        event = button.click(setter(shared.tabs, run.tab, values), None, [shared.tabs, *values], **PRIVATE,
                             **LIGHT_GROUP)
        for call in calls:
            event = call.on(event.success, **PRIVATE)
