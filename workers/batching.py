"""A micro-batcher: studies that arrive together share one forward pass.

A GPU worker runs Celery's thread pool (``cxr-node worker --pool threads -c 8``):
each task thread reads, decodes and builds its DICOM outputs on the CPU, and
hands only its decoded image to this batcher. One thread runs the networks
over everything waiting, so decode and DICOM encoding stay off the GPU's
critical path and the GPU sees batches rather than one image per task.

It never holds a lone study back: it waits (at most ``window`` seconds) only
while some thread has entered a task and not yet handed over its image.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from typing import Generic, TypeVar

logger = logging.getLogger(__name__)

In = TypeVar("In")
Out = TypeVar("Out")


class MicroBatcher(Generic[In, Out]):
    """Run ``run_batch`` over the items that ``submit`` receives, several at a time.

    Parameters
    ----------
    run_batch
        Takes a list of items, returns one result per item in the same order.
    window
        Seconds to wait for more items while other tasks are still on their way.
    max_batch
        Largest batch handed to ``run_batch``.
    """

    def __init__(
        self, run_batch: Callable[[list[In]], list[Out]], window: float, max_batch: int = 16
    ) -> None:
        self._run_batch = run_batch
        self.window = window
        self.max_batch = max_batch
        self._cond = threading.Condition()
        self._waiting: list[tuple[In, Future[Out]]] = []
        self._pending = 0  # threads inside task() that have not submitted yet
        self._local = threading.local()
        self.batch_sizes: list[int] = []
        threading.Thread(target=self._loop, name="micro-batcher", daemon=True).start()

    @contextmanager
    def task(self) -> Iterator[None]:
        """Wrap a whole task: while it runs, the batcher may wait for its item."""
        with self._cond:
            self._pending += 1
            self._local.pending = True
        try:
            yield
        finally:
            self._handed_over()

    def _handed_over(self) -> None:
        with self._cond:
            if getattr(self._local, "pending", False):
                self._local.pending = False
                self._pending -= 1
                self._cond.notify_all()

    def submit(self, item: In) -> Out:
        """Queue ``item``, block until its batch has run, return its result (or raise its error)."""
        future: Future[Out] = Future()
        with self._cond:
            self._waiting.append((item, future))
            self._cond.notify_all()
        self._handed_over()
        return future.result()

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._waiting:
                    self._cond.wait()
                deadline = time.monotonic() + self.window
                while len(self._waiting) < self.max_batch and self._pending > 0:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._cond.wait(left)
                batch, self._waiting = self._waiting[: self.max_batch], self._waiting[self.max_batch :]
            self.batch_sizes.append(len(batch))
            try:
                results = self._run_batch([item for item, _ in batch])
                if len(results) != len(batch):
                    raise RuntimeError(f"run_batch returned {len(results)} results for {len(batch)} items")
            except Exception as exc:  # every waiting task gets the error, the loop goes on
                logger.exception("batch of %d failed", len(batch))
                for _, future in batch:
                    future.set_exception(exc)
                continue
            for (_, future), result in zip(batch, results, strict=True):
                future.set_result(result)
