"""Every handler's last line of defence: an unexpected failure answered in one plain sentence."""
from __future__ import annotations

import functools
import inspect
import logging

import gradio as gr

log = logging.getLogger("clipdiff.app")


class UnexpectedError(gr.Error):
    """A handler's failure we did not foresee, as the client sees it (its own name, so a server's console tells it
    from a refusal of bad input)."""


def answers_clearly(fn):
    """An unexpected exception reaches the browser or API client as one plain sentence naming the handler, while
    its text and traceback (which may name files on the server) go to the server's log; the app keeps serving.
    gr.Error (our clear messages) and cancellation pass through untouched."""
    def unexpected(error: Exception) -> UnexpectedError:
        log.exception("%s failed", fn.__name__)
        return UnexpectedError(f"Something went wrong in {fn.__name__.replace('_', ' ')} ({type(error).__name__}). "
                               "The app is still running; try again or change the input. The server log has the "
                               "details.")

    if inspect.isgeneratorfunction(fn):   # Gradio streams only from generator functions: stay one
        @functools.wraps(fn)
        def streaming(*args, **kwargs):
            try:
                yield from fn(*args, **kwargs)
            except gr.Error:
                raise
            except Exception as e:
                raise unexpected(e) from None
        return streaming

    @functools.wraps(fn)
    def answering(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except Exception as e:
            raise unexpected(e) from None
    return answering
