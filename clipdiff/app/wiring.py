"""How handlers meet components. A Call binds a handler to the app's context and to its input and output
components, so a button and a tour button run the very same thing; Shared is what the tabs link to."""
from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass, field
from typing import Callable

import gradio as gr

from .context import LIGHT_GROUP, Context
from .errors import after_run_closes

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


@dataclass
class Call:
    """A handler with its input and output components and its concurrency group."""
    fn: Callable
    inputs: list
    outputs: list
    group: dict = field(default_factory=lambda: dict(LIGHT_GROUP))

    def on(self, trigger: Callable, **options):
        """Bind to a trigger (button.click, event.success, ...); returns the event, to chain or to cancel."""
        return trigger(self.fn, self.inputs, self.outputs, **self.group, **options)



def on_stop(ctx: Context, button: gr.Button, runs: list, fn: Callable, inputs, outputs) -> None:
    """A Stop button: it cancels the runs, and fn(*inputs) -> outputs says so once they have closed
    (errors.after_run_closes), so no late preview overwrites its answer."""
    Call(bind(after_run_closes(fn), ctx), inputs, outputs).on(button.click, cancels=runs, show_progress="hidden",
                                                              **PRIVATE)

@dataclass
class Shared:
    """What the tabs link to while wiring: the page, the tab switcher, the session's last run, what follows every new
    run (the playback tab shows it, the ranking ranks it, the history lists it), and the session's history of runs."""
    demo: gr.Blocks
    tabs: gr.Tabs
    last_run: gr.State
    after_run: list[Call] = field(default_factory=list)
    history: gr.State | None = None
