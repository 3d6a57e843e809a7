"""One generation in flight per browser session, so one attendee cannot take the room's sampling capacity; and Stop.

A session is what Gradio calls one (a browser tab, or one gradio_client Client): its `session_hash`. While a
session's generation runs, its next one is refused with a message saying why; the first one is not disturbed.
Refusing beats queueing here: a queued second click would hold a place in the shared queue and start a run
nobody is waiting for any more.

    guard = InFlight()
    for item in guard.stream(session, lambda stop: run(stop)):   # AlreadyRunning if session already runs one
        ...
    guard.stop(session, timeout)      # Stop: sets that run's `stop` event, waits until the run has closed

Stop is cooperative: the run's sampler reads its event after every step and the run itself says where it stopped,
so its last word is that, in order, after its previews. (Gradio's `cancels` alone closes the generator from
another task, and a run went on for ~200 steps and streamed previews after Stop had answered: issue 16.)

It bounds what a session runs, not how many sessions there are: a script can open many, so the queue limit
(--max-queue) and, for a room on the network, the proxy's limits stay the real bounds.
"""
from __future__ import annotations

import threading
from typing import Callable, Iterator, TypeVar

T = TypeVar("T")


class AlreadyRunning(RuntimeError):
    """This session already has a generation in flight."""


class InFlight:
    """Which sessions have a generation running, each with its stop event. Thread-safe: Gradio runs handlers in
    worker threads."""

    def __init__(self):
        self._lock = threading.Condition()
        self._running: dict[str, threading.Event] = {}

    def acquire(self, session: str) -> threading.Event:
        """Mark session busy; returns its run's stop event (unset)."""
        with self._lock:
            if session in self._running:
                raise AlreadyRunning(session)
            self._running[session] = stop = threading.Event()
            return stop

    def release(self, session: str) -> None:
        with self._lock:
            self._running.pop(session, None)
            self._lock.notify_all()

    def stop(self, session: str | None, timeout: float) -> bool:
        """Ask session's run to stop and wait until it has closed (at most timeout seconds). False when session had
        no run in flight (nothing to stop, or a run still waiting in the queue) or it did not close in time."""
        with self._lock:
            stop = self._running.get(session) if session is not None else None
            if stop is None:
                return False
            stop.set()
            return self._lock.wait_for(lambda: self._running.get(session) is not stop, timeout)

    def running(self, session: str) -> bool:
        with self._lock:
            return session in self._running

    def __len__(self) -> int:
        with self._lock:
            return len(self._running)

    def stream(self, session: str | None, run: Callable[[threading.Event], Iterator[T]]) -> Iterator[T]:
        """run(stop)'s items, with session marked busy from before the first item until the last, an error, or the
        consumer closing the stream (Gradio's cancel). Without a session (a direct call, not through the server)
        nothing is guarded and nothing sets `stop`. The refusal is raised on the first next(), before run starts."""
        if session is None:
            yield from run(threading.Event())
            return
        stop = self.acquire(session)
        try:
            yield from run(stop)
        finally:
            self.release(session)
