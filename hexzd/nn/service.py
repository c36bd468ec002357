"""The inference service: one per accelerator in a process, fed by every search thread.

Searchers hand it their leaves (`submit(x) -> Future`) and go on with another
group's tree while the network runs. Whatever requests wait when an evaluator
comes free go out as one batch, up to `max_batch` rows: a busy service batches
more, an idle one answers at once, and no request waits for a batch to fill.
With several evaluators (one thread each; on CUDA each has a stream of its
own) that many batches are in flight at once, so that one batch's copies and
Python work overlap another's kernels.

Why threads in one process and not a server process that workers reach over
shared memory: the search kernels release the GIL, so search threads of one
process run in parallel, and their leaves reach the network without a copy
between processes or a ZeroMQ round trip per batch. On a GPU box a
self-play process per accelerator, with a search thread per core, feeds it.

An evaluator that says it is `inline` (it costs less than a hop between
threads: the benchmark's zero-cost evaluator) is called in the submitting
thread instead, so that the same loop can be timed without the hop.

A new best network comes in between two batches (`swap`): nothing in flight
stops. The service counts the rows it evaluates and the time its evaluators
are busy; that, not finished games, is the throughput the tuner reads.
"""

import threading
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future

import numpy as np

__all__ = ["InferenceService"]

MAX_BATCH = 4096  # rows per batch at most: the largest CUDA graph or TensorRT bucket


class InferenceService:
    """Batches requests from many threads onto one or more evaluators of the same network.

    `submit(x)` returns a Future of (logits, values, seconds): the rows of x's
    evaluation and x's share of the batch's evaluation time. An evaluator's
    error fails the futures of its batch and leaves the service running.
    """

    def __init__(self, evaluators: Sequence, max_batch: int = MAX_BATCH):
        if not evaluators:
            raise ValueError("an inference service needs at least one evaluator")
        self.max_batch = max_batch
        self._evaluators = list(evaluators)
        self._queue: deque[tuple[np.ndarray, Future]] = deque()
        self._ready = threading.Condition()
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

    def submit(self, x: np.ndarray) -> Future:
        """Queues x (rows of network input); the caller must not change x until the future is done."""
        future = Future()
        evaluator = self._evaluators[0]
        if getattr(evaluator, "inline", False):
            return self._inline(evaluator, x, future)
        with self._ready:
            if self._closed:
                raise RuntimeError("the inference service is closed")
            self._queue.append((x, future))
            self._ready.notify()
        return future

    def _inline(self, evaluator, x: np.ndarray, future: Future) -> Future:
        started = time.perf_counter()
        logits, values = evaluator.evaluate(x)
        seconds = time.perf_counter() - started
        future.set_result((logits, values, seconds))
        with self._ready:
            self.served += len(x)
            self.batches += 1
            self.busy_seconds += seconds
        return future

    def evaluate(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The Evaluate signature, for callers that wait: (logits, values)."""
        logits, values, _ = self.submit(x).result()
        return logits, values

    def swap(self, evaluators: Sequence) -> None:
        """The next batches go to these evaluators (of a new network); as many as before."""
        if len(evaluators) != len(self._threads):
            raise ValueError(f"swap needs {len(self._threads)} evaluators, got {len(evaluators)}")
        with self._ready:
            self._evaluators = list(evaluators)

    def _take(self) -> list[tuple[np.ndarray, Future]] | None:
        """The requests of the next batch, in order; None once closed and drained. Holds the lock."""
        while not self._queue:
            if self._closed:
                return None
            self._ready.wait()
        batch = [self._queue.popleft()]
        rows = len(batch[0][0])
        while self._queue and rows + len(self._queue[0][0]) <= self.max_batch:
            request = self._queue.popleft()
            batch.append(request)
            rows += len(request[0])
        return batch

    def _serve(self, i: int) -> None:
        while True:
            with self._ready:
                batch = self._take()
                evaluator = self._evaluators[i]
            if batch is None:
                return
            inputs = [x for x, _ in batch]
            started = time.perf_counter()
            try:
                x = inputs[0] if len(inputs) == 1 else np.concatenate(inputs)
                logits, values = evaluator.evaluate(x)
            except BaseException as e:  # the requesters see it; the service serves the next batch
                for _, future in batch:
                    future.set_exception(e)
                continue
            seconds = time.perf_counter() - started
            start = 0
            for part, future in batch:
                end = start + len(part)
                future.set_result((logits[start:end], values[start:end], seconds * len(part) / len(x)))
                start = end
            with self._ready:
                self.served += len(x)
                self.batches += 1
                self.busy_seconds += seconds

    def close(self) -> None:
        """Serves what is queued, then stops the threads."""
        with self._ready:
            self._closed = True
            self._ready.notify_all()
        for thread in self._threads:
            thread.join()
