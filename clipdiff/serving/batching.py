"""Batching across requests: every request's step asks the U-Net one question, (x_in, t, cond); the questions that
arrive together are answered by one forward. Timesteps are per sample, so requests at different steps, samplers or
step counts share a forward as well as requests in lockstep.

Why this is safe for the pictures: each sample's prediction depends only on its own row of the inputs (the U-Net
has no batch-wise layers: group norm and attention work within a sample). The only change a batch mate can make is
which CPU kernels run, which moves the last float bits (tests/test_serve.py says how far).

Two batchers use predict_batch: Ray Serve's `@serve.batch` on a replica (ray_sampler.py), and `StepBatcher` here, the
same per-step batching in this process for the local backend: each request's GuidedRun stays in its own handler
thread (its scheduler step, records and previews are that thread's work), and one model thread takes every pending
question, runs one forward and hands each request its eps (iteration-level scheduling: a run joins at its next
step and leaves when it is done).
"""
from __future__ import annotations

import atexit
import threading
import time
from collections import Counter, deque
from contextlib import contextmanager
from typing import TYPE_CHECKING, Iterator

import torch

if TYPE_CHECKING:   # named in annotations only
    from ..sampling import GuidedRun, Progress
    from ..unet import ConditionalUNet

ModelInput = tuple[torch.Tensor, torch.Tensor, torch.Tensor]   # x_in (B, C, H, W), t (B,), cond (B, D)

# One forward takes questions in arrival order up to this many rows (2 per image: conditional and unconditional); a
# question that would pass it waits for the next forward, where it comes first. 128 rows is 8 runs of 8 images: on 2
# cores a forward of 128 rows costs less per row than 8 of 16, and one step of every run in it stays well under a
# second, so Stop still answers within a step.
MAX_FORWARD_ROWS = 128
# How long the model thread waits for the other runs in flight to ask their step's question before it answers those
# that have: a run's handler thread also sends previews and writes records between two questions, and a run that
# misses a forward is answered in the next one.
BATCH_WAIT_S = 0.01


def predict_batch(model: ConditionalUNet, inputs: list[ModelInput]) -> list[torch.Tensor]:
    """Noise predictions for several requests' inputs in one forward, split back in order."""
    sizes = [x.shape[0] for x, _, _ in inputs]
    with torch.inference_mode():
        x = torch.cat([x for x, _, _ in inputs])
        t = torch.cat([t.reshape(-1) for _, t, _ in inputs])
        cond = torch.cat([c for _, _, c in inputs])
        return list(model(x, t, cond).split(sizes))


def forward_size(inputs: list[ModelInput]) -> int:
    return sum(x.shape[0] for x, _, _ in inputs)


class _Question:
    """One run's step waiting for its eps (or the forward's error)."""
    __slots__ = ("inputs", "answered", "eps", "error")

    def __init__(self, inputs: ModelInput):
        self.inputs = inputs
        self.answered = threading.Event()
        self.eps: torch.Tensor | None = None
        self.error: BaseException | None = None


class StepBatcher:
    """Per-step batching across the runs in flight in this process: `drive(run)` is sampling.drive with the U-Net call
    shared. The model thread starts with the first question and ends with close(). Thread-safe: every handler thread
    drives its own run through the same batcher."""

    def __init__(self, model: ConditionalUNet, max_rows: int = MAX_FORWARD_ROWS, batch_wait_s: float = BATCH_WAIT_S):
        self.model, self.max_rows, self.batch_wait_s = model, max(1, int(max_rows)), max(0.0, float(batch_wait_s))
        self._cv = threading.Condition()
        self._pending: deque[_Question] = deque()
        self._runs = 0                      # runs in flight (between their first step and their end)
        self._thread: threading.Thread | None = None
        self._closed = False
        self.counts: Counter = Counter()    # forwards, questions, rows
        self.runs_per_forward: Counter = Counter()   # runs answered by one forward -> how many such forwards

    def drive(self, run: GuidedRun) -> Iterator[Progress]:
        """Yield a Progress after every step of run, its U-Net question answered together with the other runs'
        (sampling.drive's contract: closing the generator stops the run between two steps)."""
        from ..sampling import drive as drive_one    # its loop, run of no steps included; predict is ours

        with self._in_flight():
            yield from drive_one(run, self.predict)

    def predict(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """One question's eps, answered by the model thread's next forward (sampling.Predictor's signature)."""
        question = _Question((x, t, cond))
        with self._cv:
            if self._closed:
                raise RuntimeError("the sampler has shut down")
            if self._thread is None:
                self._thread = threading.Thread(target=self._serve, name="clipdiff-model", daemon=True)
                self._thread.start()
                # A daemon thread still inside a forward when the interpreter finalises can crash it: end ours first.
                atexit.register(self.close)
            self._pending.append(question)
            self._cv.notify_all()
        question.answered.wait()
        if question.error is not None:
            raise question.error
        return question.eps

    @contextmanager
    def _in_flight(self):
        with self._cv:
            self._runs += 1
        try:
            yield
        finally:
            with self._cv:
                self._runs -= 1
                self._cv.notify_all()       # the model thread may be waiting for this run's question

    def in_flight(self) -> int:
        with self._cv:
            return self._runs

    def close(self) -> None:
        """Stop the model thread once the questions already asked are answered; later questions are refused."""
        with self._cv:
            self._closed = True
            self._cv.notify_all()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=30)

    def _next_forward(self) -> list[_Question] | None:
        """The questions of the next forward: wait for a first one, then (at most batch_wait_s) for every other run in
        flight to ask; then those in arrival order up to max_rows (always at least one). None: closed and done."""
        with self._cv:
            self._cv.wait_for(lambda: self._pending or self._closed)
            if not self._pending:
                return None
            deadline = time.monotonic() + self.batch_wait_s
            while len(self._pending) < self._runs and not self._closed and self._rows() < self.max_rows:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cv.wait(left)
            batch, rows = [], 0
            while self._pending and (not batch or rows + self._pending[0].inputs[0].shape[0] <= self.max_rows):
                question = self._pending.popleft()
                rows += question.inputs[0].shape[0]
                batch.append(question)
            return batch

    def _rows(self) -> int:
        return sum(q.inputs[0].shape[0] for q in self._pending)

    def _serve(self) -> None:
        while (batch := self._next_forward()) is not None:
            try:
                answers = predict_batch(self.model, [q.inputs for q in batch])
                for question, eps in zip(batch, answers):
                    question.eps = eps
            except BaseException as error:   # noqa: BLE001 (every run of the forward gets the error, raised in its thread)
                for question in batch:
                    question.error = error
            finally:
                self.counts.update(forwards=1, questions=len(batch), rows=forward_size([q.inputs for q in batch]))
                self.runs_per_forward[len(batch)] += 1
                for question in batch:
                    question.answered.set()
