"""The entry points to the inference backends (hexzd.nn.backends): `evaluate(codes) -> (logits, values)`.

`build(model, backend, precision)` makes one evaluator of a named backend;
`available()` lists the (backend, precision) pairs this machine runs.
`make_evaluator(source, backend="auto")` measures each available backend for
a moment at a typical batch and keeps the fastest that passes its tolerance
(TOLERANCE, against eager fp32); `evaluator.reason` says which and why, and
it is logged. None of them names a backend: they go through the registry
(hexzd.nn.backends.base.registered).
"""

import logging
import time

import numpy as np
import torch

from hexzd.nn.backends.base import (
    PROBE_BATCH,
    TOLERANCE,
    Evaluator,
    max_difference,
    registered,
    sample_codes,
)
from hexzd.nn.backends.eager import EagerEvaluator
from hexzd.nn.net import HexNet
from hexzd.nn.snapshot import Snapshot

__all__ = ["available", "build", "make_evaluator", "throughput", "to_model"]

log = logging.getLogger(__name__)

PROBE_SECONDS = 0.3  # per backend, after a warm-up


def available(backend: str = "auto", precision: str = "auto") -> list[tuple[str, str]]:
    """The (backend, precision) pairs this machine can run, fastest kinds last."""
    pairs = [(entry.name, p) for entry in registered().values() if entry.probed for p in entry.available()]
    return [(b, p) for b, p in pairs if backend in ("auto", b) and precision in ("auto", p)]


def build(
    model: HexNet, backend: str, precision: str = "fp32", device: str = "cpu", max_batch: int | None = None
) -> Evaluator:
    """One evaluator of a named backend and precision, without measuring.

    `device` matters only to the eager backend, which runs anywhere.
    `max_batch` warms it up to that batch (CUDA graphs, TensorRT engines).
    """
    backends = registered()
    if backend not in backends:
        raise ValueError(f"unknown backend {backend!r}; one of {', '.join(backends)}")
    evaluator = backends[backend].build(model, precision, device)
    if max_batch:
        evaluator.warm(max_batch)
    return evaluator


def throughput(
    evaluator: Evaluator, codes: np.ndarray, seconds: float, rounds: int = 1, clock=time.perf_counter
) -> float:
    """Evaluations per second, the best of `rounds` rounds of about seconds/rounds each.

    One warm-up call goes first (graph capture, engine build, allocator).
    The best round, not the mean, because on a shared machine the slow
    rounds measure the neighbours. `clock`: time.thread_time gives
    evaluations per CPU-second of a one-thread CPU evaluator, which
    neighbours slow less than the wall clock.
    """
    evaluator.evaluate(codes)
    best = 0.0
    for _ in range(rounds):
        calls, start = 0, clock()
        while True:
            evaluator.evaluate(codes)
            calls += 1
            elapsed = clock() - start
            if elapsed >= seconds / rounds:
                break
        best = max(best, calls * len(codes) / elapsed)
    return best


def to_model(source) -> HexNet:
    """A HexNet from a model, a Snapshot or a snapshot's bytes."""
    if isinstance(source, HexNet):
        return source
    if isinstance(source, (bytes, bytearray, memoryview)):
        source = Snapshot.from_bytes(bytes(source))
    if isinstance(source, Snapshot):
        return source.model()
    raise TypeError(f"cannot make a model from {type(source).__name__}")


def make_evaluator(
    source,
    backend: str = "auto",
    precision: str = "auto",
    threads: int | None = None,
    probe_batch: int = PROBE_BATCH,
    max_batch: int | None = None,
) -> Evaluator:
    """An evaluator for a model, Snapshot or snapshot bytes.

    With backend or precision "auto", every available pair is built, checked
    against eager fp32 within its tolerance and timed at `probe_batch`; the
    fastest wins. A backend that "auto" never probes (eager) is built as
    asked. `threads` sets torch's CPU threads for this process.
    `max_batch` warms the chosen one up to that batch (see Evaluator.warm).
    """
    model = to_model(source)
    if threads:
        torch.set_num_threads(threads)
    entry = registered().get(backend)  # None for "auto", and for a name no backend has
    if backend != "auto" and (precision != "auto" or (entry is not None and not entry.probed)):
        return build(model, backend, "fp32" if precision == "auto" else precision, max_batch=max_batch)
    pairs = available(backend, precision)
    if not pairs:
        raise ValueError(f"no {backend} backend with {precision} precision on this machine")
    codes = sample_codes(model.spec.board_size, probe_batch, seed=3)
    reference = EagerEvaluator(model).evaluate(codes)
    timed, notes = [], []
    for b, p in pairs:
        try:
            evaluator = build(model, b, p)
            gap = max_difference(evaluator.evaluate(codes), reference)
            if gap > TOLERANCE[p]:
                notes.append(f"{b} {p} off by {gap:.2g}")
                continue
            # With one candidate there is nothing to compare: skip the timing.
            rate = throughput(evaluator, codes, PROBE_SECONDS) if len(pairs) > 1 else None
            timed.append((rate or 0.0, b, p, evaluator))
        except Exception as e:  # a backend that cannot start here is skipped, and said so
            notes.append(f"{b} {p} failed: {e}")
    if not timed:
        raise RuntimeError("no backend works: " + "; ".join(notes))
    timed.sort(key=lambda t: -t[0])
    rate, _, _, best = timed[0]
    if len(pairs) == 1:
        why = "the only one available here"
    else:
        others = ", ".join(f"{b} {p} {r:,.0f}/s" for r, b, p, _ in timed[1:])
        why = f"fastest at batch {probe_batch}, {rate:,.0f} evals/s" + (f"; then {others}" if others else "")
    best.reason = f"{best.backend} {best.precision}: {why}" + (f" ({'; '.join(notes)})" if notes else "")
    log.info("inference backend %s", best.reason)
    if max_batch:
        best.warm(max_batch)
    return best
