"""Shared timing for the benchmarks: run a workload until enough time has passed."""

import os
import time
from collections.abc import Callable


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


def compare(
    benchmark: str,
    unit: str,
    size: int,
    seconds: float,
    hexzd_work: Callable[[], float],
    baseline_work: Callable[[], float],
    **details,
) -> dict:
    """Times hexzd and its baseline on the same work, in this run.

    hexzd_work runs once first, untimed, so that numba compiles outside the
    measurement.
    """
    hexzd_work()
    hexzd_per_s = rate(hexzd_work, seconds)
    baseline_per_s = rate(baseline_work, seconds)
    return {
        "benchmark": benchmark,
        "unit": unit,
        "size": size,
        **details,
        "hexzd_per_s": hexzd_per_s,
        "baseline_per_s": baseline_per_s,
        "ratio": hexzd_per_s / baseline_per_s,
    }


def print_comparison(result: dict, title: str, baseline: str) -> None:
    """The report of a `compare` result: a title line, both rates and the ratio."""
    r = result
    print(title)
    print(f"  hexzd     {r['hexzd_per_s']:12,.0f} {r['unit']}  ({r['batch']} games per batch)")
    print(f"  {baseline:<9} {r['baseline_per_s']:12,.0f} {r['unit']}")
    print(f"  ratio     {r['ratio']:12.1f}x")
