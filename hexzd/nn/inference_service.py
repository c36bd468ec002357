"""The inference service: one per accelerator in a process, fed by every search thread.

Searchers hand it their leaves (`submit(codes) -> Reply`) and go on with another
group's tree while the network runs. Whatever requests wait when an evaluator
comes free go out as one batch, up to `max_batch` rows: a busy service batches
more, an idle one answers at once, and no request waits for a batch to fill.
With several evaluators (one thread each; on CUDA each has a stream of its
own) that many batches are in flight at once, so that one batch's copies and
Python work overlap another's kernels.

Why threads in one process and not a server process that workers reach over
shared memory: measured by `hexzd bench selfplay` (hexzd.benchmarks.hop; the
docs/how/inference.md has the figures). A request's round trip to this service's thread
costs well under half of one to another process over ZeroMQ and shared
memory, and every thread's leaves join one batch on one CUDA context. The
price is the GIL: the Python between the search kernels runs one thread at
a time, so a process's threads scale up to about one over that share of a
step (4% with groups of 512 games on 9x9); past that, a GPU takes two
self-play processes.

An evaluator that says it is `inline` (it costs less than a hop between
threads: the benchmark's zero-cost evaluator) is called in the submitting
thread instead, so that the same loop can be timed without the hop.

A new best network comes in between two batches (`swap`): nothing in flight
stops. The service counts the rows it evaluates and the time its evaluators
are busy; that, not finished games, is the throughput the tuner reads.
"""

import queue
import threading
import time
from collections.abc import Sequence

import numpy as np

__all__ = ["InferenceService", "Reply"]

MAX_BATCH = 4096  # rows per batch at most: the largest CUDA graph or TensorRT bucket


class Reply:
    """The answer to one request; `result()` waits for it.

    One lock that the service releases, where a concurrent.futures.Future
    waits on a condition with a lock of its own per waiter: a hop between
    threads then costs one wake-up. On the 2-core development VM a request's
    round trip through the service took 108 us of CPU with a Future and a
    Condition-guarded deque, 60-70 us with this and a SimpleQueue
    (`hexzd bench selfplay` measures the hop).
    """

    __slots__ = ("_done", "_value", "_error")

    def __init__(self):
        self._done = threading.Lock()
        self._done.acquire()
        self._value = self._error = None

    def _set(self, value=None, error: BaseException | None = None) -> None:
        self._value, self._error = value, error
        self._done.release()

    def result(self):
        """(logits, values, seconds) once evaluated; raises the evaluator's error if it failed."""
        with self._done:  # blocks until _set; released again so that result() can be asked twice
            pass
        if self._error is not None:
            raise self._error
        return self._value


class InferenceService:
    """Batches requests from many threads onto one or more evaluators of the same network.

    `submit(codes)` returns a Reply of (logits, values, seconds): the rows of
    their evaluation and their share of the batch's evaluation time. An
    evaluator's error fails the replies of its batch and leaves the service
    running.
    """

    def __init__(self, evaluators: Sequence, max_batch: int = MAX_BATCH):
        if not evaluators:
            raise ValueError("an inference service needs at least one evaluator")
        self.max_batch = max_batch
        self._evaluators = list(evaluators)
        self._queue: queue.SimpleQueue[tuple[np.ndarray, Reply] | None] = queue.SimpleQueue()
        self._lock = threading.Lock()  # orders submit against close, and guards the counters
        self._closed = False
        self.served = 0  # rows evaluated since the start
        self.batches = 0
        self.busy_seconds = 0.0  # summed over the evaluators
        self._threads = [
            threading.Thread(target=self._serve, args=(i,), name=f"inference-{i}", daemon=True)
            for i in range(len(self._evaluators))
        ]
        for thread in self._threads:
            thread.start()

    @property
    def in_flight(self) -> int:
        return len(self._threads)

    def submit(self, codes: np.ndarray) -> Reply:
        """Queues codes (rows of network input); the caller must not change them until the reply is in."""
        reply = Reply()
        evaluator = self._evaluators[0]
        if getattr(evaluator, "inline", False):
            return self._inline(evaluator, codes, reply)
        with self._lock:
            if self._closed:
                raise RuntimeError("the inference service is closed")
            self._queue.put((codes, reply))
        return reply

    def _inline(self, evaluator, codes: np.ndarray, reply: Reply) -> Reply:
        started = time.perf_counter()
        logits, values = evaluator.evaluate(codes)
        seconds = time.perf_counter() - started
        reply._set((logits, values, seconds))
        self._count(len(codes), seconds)
        return reply

    def _count(self, rows: int, seconds: float) -> None:
        with self._lock:
            self.served += rows
            self.batches += 1
            self.busy_seconds += seconds

    def evaluate(self, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The Evaluate signature, for callers that wait: (logits, values)."""
        logits, values, _ = self.submit(codes).result()
        return logits, values

    def swap(self, evaluators: Sequence) -> None:
        """The next batches go to these evaluators (of a new network); as many as before."""
        if len(evaluators) != len(self._threads):
            raise ValueError(f"swap needs {len(self._threads)} evaluators, got {len(evaluators)}")
        self._evaluators = list(evaluators)  # one assignment: a batch takes the old list or the new

    def _take(self, carry):
        """(the requests of the next batch, in order; the request that did not fit; whether closing).

        Waits for a first request (or starts from the one carried over from the
        last batch), then takes whatever else waits, up to max_batch rows.
        """
        first = carry if carry is not None else self._queue.get()
        if first is None:
            return [], None, True
        batch, rows = [first], len(first[0])
        while True:
            try:
                request = self._queue.get_nowait()
            except queue.Empty:
                return batch, None, False
            if request is None:
                return batch, None, True
            if rows + len(request[0]) > self.max_batch:
                return batch, request, False
            batch.append(request)
            rows += len(request[0])

    def _serve(self, i: int) -> None:
        carry, closing = None, False
        while not closing:
            batch, carry, closing = self._take(carry)
            if batch:
                self._run(self._evaluators[i], batch)

    def _run(self, evaluator, batch: list[tuple[np.ndarray, Reply]]) -> None:
        parts = [codes for codes, _ in batch]
        started = time.perf_counter()
        try:
            codes = parts[0] if len(parts) == 1 else np.concatenate(parts)
            logits, values = evaluator.evaluate(codes)
        except BaseException as e:  # the requesters see it; the service serves the next batch
            for _, reply in batch:
                reply._set(error=e)
            return
        seconds = time.perf_counter() - started
        start = 0
        for part, reply in batch:
            end = start + len(part)
            reply._set((logits[start:end], values[start:end], seconds * len(part) / len(codes)))
            start = end
        self._count(len(codes), seconds)

    def close(self) -> None:
        """Serves what is queued, then stops the threads."""
        with self._lock:
            if not self._closed:
                self._closed = True
                for _ in self._threads:  # after every queued request: each thread stops at one
                    self._queue.put(None)
        for thread in self._threads:
            thread.join()
