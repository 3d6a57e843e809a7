"""Every handler's last line of defence: an unexpected failure answered in one plain sentence."""
from __future__ import annotations

import functools
import inspect
import logging

import gradio as gr

from ..serving.fairness import AlreadyRunning
from .runs import RunStatus

log = logging.getLogger("clipdiff.app")


class UnexpectedError(gr.Error):
    """A handler's failure we did not foresee, as the client sees it (its own name, so a server's console tells it
    from a refusal of bad input)."""


def refusal(fn, error: gr.Error) -> gr.Error:
    """A gr.Error on its way to the client (a clear refusal of bad input, or a busy session): one line in the
    server's log instead of the traceback Gradio prints for every failed event; nothing went wrong on the server."""
    if not isinstance(error, UnexpectedError):
        log.warning("%s refused: %s", fn.__name__, error.message)
        error.print_exception = False
    return error


def answers_clearly(fn):
    """An unexpected exception reaches the browser or API client as one plain sentence naming the handler, while
    its text and traceback (which may name files on the server) go to the server's log; the app keeps serving.
    gr.Error (our clear messages) passes through, logged as one line (`refusal`); cancellation passes untouched."""
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
            except gr.Error as e:
                raise refusal(fn, e)
            except Exception as e:
                raise unexpected(e) from None
        return streaming

    @functools.wraps(fn)
    def answering(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except gr.Error as e:
            raise refusal(fn, e)
        except Exception as e:
            raise unexpected(e) from None
    return answering


BUSY_MESSAGE = ("You already have a generation running in this session: wait for it to finish, or press Stop, "
                "before starting another.")


# Gradio fills a handler's `gr.Request` parameter with the caller's request: the session hash comes from there.
REQUEST = inspect.Parameter("request", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None, annotation=gr.Request)


def one_per_session(fn):
    """A sampling handler fn(ctx, ...) that refuses a session's second run while its first is in flight, and that
    Stop can stop (serving.fairness, ctx.in_flight): fn runs with ctx.for_run(stop), and its sampler reads that
    event. Gradio hands the handler its request (for the session hash) through the `request` parameter added here;
    the API's inputs do not change, and a direct call (no request) is not guarded."""
    signature = inspect.signature(fn)
    signature = signature.replace(parameters=[*signature.parameters.values(), REQUEST])

    @functools.wraps(fn)
    def guarded(*args, **kwargs):
        bound = signature.bind(*args, **kwargs)
        session = getattr(bound.arguments.pop("request", None), "session_hash", None)
        ctx, *rest = bound.args
        try:
            yield from ctx.in_flight.stream(session, lambda stop: fn(ctx.for_run(stop), *rest, **bound.kwargs))
        except AlreadyRunning:
            raise gr.Error(BUSY_MESSAGE) from None
    guarded.__signature__ = signature
    guarded.__annotations__ = {**fn.__annotations__, "request": gr.Request}
    return guarded


def said_in_status(fn, outputs: list, status):
    """fn (a handler bound to `outputs`) as a page's event runs it, with one output more: the outcome its status
    says (runs.RunStatus), in a gr.State. Each update's status goes there as well (when `status` is among the
    outputs); a gr.Error (a refusal, or a failure after part of a run) goes there as the status it leaves (why, or
    where the run stopped), leaving every other output as it was, and then reaches the client as before: the corner
    message in the browser, an error for an API client. Always a generator (that update must go out before the
    error), with fn's signature (Gradio reads its parameters and `request` from it)."""
    at = next((k for k, c in enumerate(outputs) if c is status), None)
    width = len(outputs)

    def parts(update) -> list:
        if width == 1:
            return [update]
        return list(update) if isinstance(update, (tuple, list)) else [update] * width   # gr.skip() for all

    @functools.wraps(fn)
    def saying(*args, **kwargs):
        last = None         # the last status the run said
        try:
            result = fn(*args, **kwargs)
            for update in (result if inspect.isgenerator(result) else [result]):
                values = parts(update)
                said = values[at] if at is not None and isinstance(values[at], RunStatus) else gr.skip()
                last = said if isinstance(said, RunStatus) else last
                yield (*values, said)
        except gr.Error as e:
            left = last.failed(e.message) if isinstance(last, RunStatus) else RunStatus.refusal(e.message)
            yield (*[gr.skip()] * width, left)
            raise
    return saying
