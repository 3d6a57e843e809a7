"""How handlers meet components. A Call binds a handler to the app's context and to its input and output
components, so a button and a tour button run the very same thing; Shared is what the tabs link to."""
from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Callable

import gradio as gr

from .context import LIGHT_GROUP, Context

PRIVATE = {"api_visibility": "private"}   # an event the page uses that is no API endpoint


def bind(fn: Callable, ctx: Context) -> Callable:
    """fn(ctx, ...) as Gradio calls it, with the components' values: ctx bound, fn's name kept (Gradio reads the
    rest of the signature for the API's parameter names)."""
    bound = functools.partial(fn, ctx)
    bound.__name__ = fn.__name__
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


@dataclass
class Shared:
    """What the tabs link to while wiring: the page, the tab switcher, the session's last run, and what follows
    every new run (the playback tab shows it)."""
    demo: gr.Blocks
    tabs: gr.Tabs
    last_run: gr.State
    after_run: list[Call] = field(default_factory=list)
