"""One generation in flight per browser session, so one attendee cannot take the room's sampling capacity.

A session is what Gradio calls one (a browser tab, or one gradio_client Client): its `session_hash`. While a
session's generation runs, its next one is refused with a message saying why; the first one is not disturbed.
Refusing beats queueing here: a queued second click would hold a place in the shared queue and start a run
nobody is waiting for any more.

    guard = InFlight()
    for item in guard.stream(session, run()):   # refuses (AlreadyRunning) if session already runs one
        ...

It bounds what a session runs, not how many sessions there are: a script can open many, so the queue limit
(--max-queue) and, for a room on the network, the proxy's limits stay the real bounds.
"""
from __future__ import annotations

import threading
from typing import Iterator, TypeVar

T = TypeVar("T")


class AlreadyRunning(RuntimeError):
    """This session already has a generation in flight."""


class InFlight:
    """Which sessions have a generation running. Thread-safe: Gradio runs handlers in worker threads."""

    def __init__(self):
        self._lock = threading.Condition()
        self._running: set[str] = set()

    def acquire(self, session: str) -> None:
        with self._lock:
            if session in self._running:
                raise AlreadyRunning(session)
            self._running.add(session)

    def release(self, session: str) -> None:
        with self._lock:
            self._running.discard(session)
            self._lock.notify_all()

    def wait_until_free(self, session: str | None, timeout: float) -> bool:
        """Block until session has no generation in flight (or timeout seconds pass); True when it has none."""
        if session is None:
            return True
        with self._lock:
            return self._lock.wait_for(lambda: session not in self._running, timeout)

    def running(self, session: str) -> bool:
        with self._lock:
            return session in self._running

    def __len__(self) -> int:
        with self._lock:
            return len(self._running)

    def stream(self, session: str | None, items: Iterator[T]) -> Iterator[T]:
        """items, with session marked busy from before the first item until the last, an error, or the consumer
        closing the stream (Stop). Without a session (a direct call, not through the server) nothing is guarded.
        The refusal is raised on the first next(), before items is started."""
        if session is None:
            yield from items
            return
        self.acquire(session)
        try:
            yield from items
        finally:
            self.release(session)
