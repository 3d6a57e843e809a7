"""How handlers meet components. A Call binds a handler to the app's context and to its input and output
components, so a button and a tour button run the very same thing; Shared is what the tabs link to."""
from __future__ import annotations

import functools
import inspect
import weakref
from dataclasses import dataclass, field
from typing import Callable

import gradio as gr

from .context import LIGHT_GROUP, Context
from .errors import said_in_status
from .runs import cleared, finished, said, stop_run

PRIVATE = {"api_visibility": "private"}   # an event the page uses that is no API endpoint


def bind(fn: Callable, ctx: Context) -> Callable:
    """fn(ctx, ...) as Gradio calls it, with the components' values: ctx bound; fn's name, the rest of its signature
    (the API's parameter names) and its annotations kept, so Gradio still sees a generator function (it streams
    only from those) and still finds a `request: gr.Request` parameter (a functools.partial hides both)."""
    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def bound(*args, **kwargs):
            yield from fn(ctx, *args, **kwargs)
    else:
        @functools.wraps(fn)
        def bound(*args, **kwargs):
            return fn(ctx, *args, **kwargs)
    signature = inspect.signature(fn)
    bound.__signature__ = signature.replace(parameters=list(signature.parameters.values())[1:])
    return bound


# Each status component's outcome (runs.RunStatus) in a gr.State beside it: what the failure path and the gate after
# a run read, since a status's text is never parsed. Made on first use, while the page is being wired.
OUTCOMES: "weakref.WeakKeyDictionary[gr.Markdown, gr.State]" = weakref.WeakKeyDictionary()


def outcome_of(status: gr.Markdown) -> gr.State:
    if status not in OUTCOMES:
        OUTCOMES[status] = gr.State(None)
    return OUTCOMES[status]


@dataclass
class Call:
    """A handler with its input and output components, its concurrency group, and the status that says its refusals
    (a tab's status Markdown; None: Gradio's own error display, its Error marks included)."""
    fn: Callable
    inputs: list
    outputs: list
    group: dict = field(default_factory=lambda: dict(LIGHT_GROUP))
    status: gr.Markdown | None = None

    def on(self, trigger: Callable, **options):
        """Bind to a trigger (button.click, event.success, ...); returns the event, to chain or to cancel.

        With a status, a refusal never hides a control or a result (issue 21.2). Gradio marks a failed event's
        progress targets "Error" until their next update (with hidden progress too, in the page's markup), so the
        progress goes to the status alone; the reason goes to the status's outcome (errors.said_in_status) and,
        once the event has failed, into the status itself (runs.said), which lifts the mark; every other output
        stays as it was. An API client still gets the refusal as an error."""
        if self.status is None:
            return trigger(self.fn, self.inputs, self.outputs, **self.group, **options)
        outcome = outcome_of(self.status)
        outputs = list(self.outputs) if isinstance(self.outputs, (list, tuple)) else [self.outputs]
        options["show_progress_on"] = [self.status]
        event = trigger(said_in_status(self.fn, outputs, self.status), self.inputs, [*outputs, outcome],
                        **self.group, **options)
        Call(said, outcome, [self.status, outcome]).on(event.failure, show_progress="hidden", **PRIVATE)
        if not any(c is self.status for c in outputs):     # a refusal's words go once the same button succeeds
            Call(cleared, outcome, [self.status, outcome]).on(event.success, show_progress="hidden", **PRIVATE)
        return event


def on_stop(ctx: Context, button: gr.Button, runs: list) -> None:
    """A Stop button: the session's run stops after the step in progress and says where itself (runs.stop_run).
    Gradio cancels a run only when none was in flight (one still waiting in the queue) or it did not stop in time:
    its cancel, fired with Stop's click, would race the run's own last word. The cue is a State's change, because
    Gradio attaches a chained event's (.then, .failure) `cancels` to no trigger at all (gradio 6.31)."""
    unstarted_stops = gr.State(0)
    Call(bind(stop_run, ctx), unstarted_stops, unstarted_stops).on(button.click, show_progress="hidden", **PRIVATE)
    unstarted_stops.change(None, None, None, cancels=runs, **PRIVATE)


def after_finished(run: gr.events.Dependency, status: gr.Markdown, shared: "Shared") -> None:
    """What follows every new run (shared.after_run), after `run` (bound with this status) has finished: not after
    one that stopped part way (its session's last run is still the one before)."""
    gate = Call(finished, outcome_of(status), None).on(run.success, show_progress="hidden", **PRIVATE)
    for call in shared.after_run:
        call.on(gate.success, **PRIVATE)


@dataclass
class Shared:
    """What the tabs link to while wiring: the page, the tab switcher, the session's last run, what follows every new
    run (the playback tab shows it, the ranking ranks it, the history lists it), and the session's history of runs."""
    demo: gr.Blocks
    tabs: gr.Tabs
    last_run: gr.State
    after_run: list[Call] = field(default_factory=list)
    history: gr.State | None = None
