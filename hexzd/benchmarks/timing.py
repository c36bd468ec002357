"""Shared timing for the benchmarks: run a workload until enough time has passed."""
import os
import time
from typing import Callable


def single_core() -> None:
    """Keeps numba, OpenMP and torch to one thread, as the benchmarks promise."""
    os.environ.setdefault("NUMBA_NUM_THREADS", "1")
    os.environ.setdefault("OMP_NUM_THREADS", "1")


def rate(work: Callable[[], float], seconds: float) -> float:
    """Units of work per second: calls `work` (which returns units done) repeatedly."""
    done, start = 0.0, time.perf_counter()
    while True:
        done += work()
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return done / elapsed
