"""Micro-batching: one worker thread owns the model; items from concurrent requests share forward passes.

Requests :meth:`MicroBatcher.submit` their items to a bounded queue and get one
:class:`concurrent.futures.Future` per item. The worker takes the oldest item and closes the batch when it holds
``max_batch`` items or ``max_wait_s`` after that item was queued, whichever comes first; an item that already
waited longer (the worker was busy) closes its batch at once with whatever else is queued. A full queue raises
:class:`QueueFull` at once: the caller answers 429 instead of letting memory grow.

A future's result is ``(result, queue_wait_s, batch_size)``. A cancelled future (its request timed out or went
away) is dropped before its batch runs. When ``fn`` raises, every item of that batch gets the exception.

:class:`DaemonPool` runs the service's image decoding on a few daemon threads.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, Future
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar

from ..utils import trim_heap

__all__ = ["DaemonPool", "MicroBatcher", "QueueFull", "ShuttingDown"]

log = logging.getLogger(__name__)
_P = ParamSpec("_P")
_T = TypeVar("_T")


class QueueFull(Exception):
    """The queue cannot take the items now (``depth`` queued of ``capacity``)."""

    def __init__(self, depth: int, capacity: int, wanted: int):
        super().__init__(f"queue full: {depth} of {capacity} images queued, {wanted} more asked for")
        self.depth, self.capacity, self.wanted = depth, capacity, wanted


class ShuttingDown(Exception):
    """The batcher is stopping and takes no more work."""


@dataclass
class _Job:
    item: Any
    future: Future
    queued_at: float


class MicroBatcher:
    """Args:
    fn: ``fn(items) -> results`` (same length and order), run on the worker thread only.
    max_batch: most items per call of ``fn``.
    max_wait_s: how long the oldest queued item may wait for others to join its batch.
    max_queue: most items waiting (not counting the batch being run).
    on_batch: ``on_batch(size, seconds, queue_waits)`` after each batch (metrics), on the worker thread.
    """

    def __init__(
        self,
        fn: Callable[[list[Any]], Sequence[Any]],
        *,
        max_batch: int = 16,
        max_wait_s: float = 0.02,
        max_queue: int = 64,
        on_batch: Callable[[int, float, list[float]], None] | None = None,
        name: str = "synerdetect-model",
    ):
        if max_batch < 1 or max_queue < 1 or max_wait_s < 0:
            raise ValueError("max_batch and max_queue must be >= 1 and max_wait_s >= 0")
        self.fn, self.max_batch, self.max_wait_s, self.max_queue = fn, int(max_batch), float(max_wait_s), int(max_queue)
        self.on_batch, self.name = on_batch, name
        self._queue: deque[_Job] = deque()
        self._cv = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self.ready = threading.Event()  # set once the warm-up (if any) has run
        self.warmup_error: str | None = None
        self.batches = 0
        self.busy = False

    # ------------------------------------------------------------------ control
    def start(self, warmup: Callable[[], Any] | None = None) -> None:
        if self._thread is not None:
            raise RuntimeError("the batcher is already started")
        self._thread = threading.Thread(target=self._run, args=(warmup,), name=self.name, daemon=True)
        self._thread.start()

    def stop(self, timeout: float | None = 10.0) -> None:
        """Finish the batch being run, fail what is still queued with :class:`ShuttingDown`, join the worker."""
        with self._cv:
            self._stopping = True
            left = list(self._queue)
            self._queue.clear()
            self._cv.notify_all()
        for job in left:
            if job.future.set_running_or_notify_cancel():
                job.future.set_exception(ShuttingDown("the server is shutting down"))
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    @property
    def depth(self) -> int:
        """Items waiting in the queue now."""
        return len(self._queue)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # ------------------------------------------------------------------ producers
    def submit(self, items: Sequence[Any]) -> list[Future]:
        """Queue all of ``items`` or none of them (:class:`QueueFull`)."""
        now = time.monotonic()
        with self._cv:
            if self._stopping:
                raise ShuttingDown("the server is shutting down")
            if len(self._queue) + len(items) > self.max_queue:
                raise QueueFull(len(self._queue), self.max_queue, len(items))
            futures: list[Future] = []
            for item in items:
                f: Future = Future()
                self._queue.append(_Job(item, f, now))
                futures.append(f)
            self._cv.notify_all()
        return futures

    # ------------------------------------------------------------------ the worker
    def _take_batch(self) -> list[_Job] | None:
        with self._cv:
            while not self._queue and not self._stopping:
                self._cv.wait()
            if self._stopping:
                return None
            deadline = self._queue[0].queued_at + self.max_wait_s
            while len(self._queue) < self.max_batch and not self._stopping:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cv.wait(remaining)
            if self._stopping:
                return None
            n = min(self.max_batch, len(self._queue))
            jobs = [self._queue.popleft() for _ in range(n)]
            self.busy = True
            return jobs

    def _run(self, warmup: Callable[[], Any] | None) -> None:
        if warmup is not None:
            try:
                warmup()
            except Exception as e:  # noqa: BLE001 - reported by /readyz, the worker keeps serving
                self.warmup_error = f"{type(e).__name__}: {e}"
                log.exception("warm-up failed")
        self.ready.set()
        while True:
            jobs = self._take_batch()
            if jobs is None:
                return
            try:
                self._run_batch(jobs)
            finally:
                self.busy = False
                if self.depth == 0:  # idle: give the memory of this batch's decodes back (not under load)
                    trim_heap()

    def _run_batch(self, jobs: list[_Job]) -> None:
        start = time.monotonic()
        jobs = [j for j in jobs if j.future.set_running_or_notify_cancel()]  # drop cancelled requests' items
        if not jobs:
            return
        waits = [start - j.queued_at for j in jobs]
        try:
            results = list(self.fn([j.item for j in jobs]))
            if len(results) != len(jobs):
                raise RuntimeError(f"batch function returned {len(results)} results for {len(jobs)} items")
        except Exception as e:  # noqa: BLE001 - every waiting request gets the error, the worker lives on
            log.exception("batch of %d failed", len(jobs))
            for j in jobs:
                j.future.set_exception(e)
            return
        seconds = time.monotonic() - start
        self.batches += 1
        for j, r, w in zip(jobs, results, waits):
            j.future.set_result((r, w, len(jobs)))
        if self.on_batch is not None:
            try:
                self.on_batch(len(jobs), seconds, waits)
            except Exception:  # noqa: BLE001
                log.exception("on_batch callback failed")


class DaemonPool(Executor):
    """A fixed pool of daemon threads. Written by hand because :class:`~concurrent.futures.ThreadPoolExecutor` joins
    its threads at interpreter exit even after ``shutdown(wait=False)``: an image still decoding kept the process
    alive after SIGTERM. Daemon threads end with the process; queued work is cancelled at shutdown."""

    def __init__(self, workers: int, name: str):
        self._jobs: queue.SimpleQueue[tuple[Future, Callable[[], Any]] | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._closed = False
        self._threads = [threading.Thread(target=self._work, name=f"{name}-{i}", daemon=True) for i in range(workers)]
        for t in self._threads:
            t.start()

    def submit(self, fn: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs) -> Future[_T]:
        f: Future[_T] = Future()
        with self._lock:
            if self._closed:
                raise RuntimeError("the decode pool is shut down")
            self._jobs.put((f, lambda: fn(*args, **kwargs)))
        return f

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            f, call = job
            if not f.set_running_or_notify_cancel():
                continue
            try:
                f.set_result(call())
            except BaseException as e:  # noqa: BLE001 - handed to the waiting request
                f.set_exception(e)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._lock:
            self._closed = True
            while cancel_futures:
                try:
                    job = self._jobs.get_nowait()
                except queue.Empty:
                    break
                if job is not None:
                    job[0].cancel()
            for _ in self._threads:
                self._jobs.put(None)
        if wait:
            for t in self._threads:
                t.join()
