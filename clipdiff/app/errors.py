"""Every handler's last line of defence: an unexpected failure answered in one plain sentence."""
from __future__ import annotations

import functools
import inspect
import logging

import gradio as gr

from ..serving.fairness import AlreadyRunning

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


BUSY_MESSAGE = ("You already have a generation running in this session: wait for it to finish, or press Stop, "
                "before starting another.")


# Gradio fills a handler's `gr.Request` parameter with the caller's request: the session hash comes from there.
REQUEST = inspect.Parameter("request", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None, annotation=gr.Request)


def _with_request(fn, *leading: inspect.Parameter) -> inspect.Signature:
    """fn's signature after `leading` parameters and with a `request` one added: what a wrapper shows Gradio."""
    signature = inspect.signature(fn)
    return signature.replace(parameters=[*leading, *signature.parameters.values(), REQUEST])


def _shown_as(wrapper, fn, signature: inspect.Signature):
    wrapper.__signature__ = signature
    wrapper.__annotations__ = {**fn.__annotations__, "request": gr.Request}
    return wrapper


def _without_request(signature: inspect.Signature, args, kwargs) -> tuple[inspect.BoundArguments, str | None]:
    """A wrapper's call as fn's arguments, and the caller's session (None for a direct call, with no request)."""
    bound = signature.bind(*args, **kwargs)
    request = bound.arguments.pop("request", None)
    return bound, getattr(request, "session_hash", None)


def one_per_session(fn):
    """A sampling handler fn(ctx, ...) that refuses a session's second run while its first is in flight
    (serving.fairness, ctx.in_flight). Gradio hands the handler its request (for the session hash) through the
    `request` parameter added here; the API's inputs do not change, and a direct call (no request) is not guarded."""
    signature = _with_request(fn)

    @functools.wraps(fn)
    def guarded(*args, **kwargs):
        bound, session = _without_request(signature, args, kwargs)
        ctx = bound.args[0]
        try:
            yield from ctx.in_flight.stream(session, fn(*bound.args, **bound.kwargs))
        except AlreadyRunning:
            raise gr.Error(BUSY_MESSAGE) from None
    return _shown_as(guarded, fn, signature)


# A cancelled run closes within one sampler step (its generator is closed once the step in progress returns);
# longer than any step here, short enough that a stuck run cannot hold Stop's answer for long.
STOP_WAIT_S = 5.0


def after_run_closes(fn):
    """Stop's handler fn(...) as fn(ctx, ..., request): it answers once the session's cancelled run has closed
    (ctx.in_flight frees the session), so no preview that run yielded just before Stop can land after the answer
    and put "Sampling: step k of n" back. Stop's click and its cancel run side by side in Gradio; this orders them.
    A direct call (no request) does not wait."""
    signature = _with_request(fn, inspect.Parameter("ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD))

    @functools.wraps(fn)
    def waiting(*args, **kwargs):
        bound, session = _without_request(signature, args, kwargs)
        ctx, *rest = bound.args
        ctx.in_flight.wait_until_free(session, STOP_WAIT_S)
        return fn(*rest, **bound.kwargs)
    return _shown_as(waiting, fn, signature)
