"""Shared timing for the benchmarks: run a workload until enough time has passed."""

import os
import time
from collections.abc import Callable, Sequence


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


def compare_rows(
    benchmark: str,
    unit: str,
    size: int,
    seconds: float,
    hexzd_work: Callable[[], float],
    baselines: Sequence[tuple[str, Callable[[], float]]],
    **details,
) -> dict:
    """Times hexzd and several baselines, (name, work) pairs, in this run.

    The result is `compare`'s for the first baseline, the headline, with
    `baseline` its name, plus `baselines`: [{name, per_s, ratio}, ...] for
    every row. hexzd_work runs once first, untimed, as in `compare`.
    """
    hexzd_work()
    hexzd_per_s = rate(hexzd_work, seconds)
    rows = []
    for name, work in baselines:
        per_s = rate(work, seconds)
        rows.append({"name": name, "per_s": per_s, "ratio": hexzd_per_s / per_s})
    return {
        "benchmark": benchmark,
        "unit": unit,
        "size": size,
        **details,
        "hexzd_per_s": hexzd_per_s,
        "baseline": rows[0]["name"],
        "baseline_per_s": rows[0]["per_s"],
        "ratio": rows[0]["ratio"],
        "baselines": rows,
    }


def print_rows(result: dict, title: str, notes: Sequence[str] = ()) -> None:
    """The report of a `compare_rows` result: hexzd's rate, then each baseline's and hexzd's ratio to it."""
    r = result
    width = max(len("hexzd"), *(len(row["name"]) for row in r["baselines"]))
    print(title)
    print(f"  {'hexzd':<{width}} {r['hexzd_per_s']:12,.0f} {r['unit']}  ({r['batch']} games per batch)")
    for row in r["baselines"]:
        print(f"  {row['name']:<{width}} {row['per_s']:12,.0f} {r['unit']}  hexzd {row['ratio']:.1f}x")
    for note in notes:
        print(f"  {note}")
