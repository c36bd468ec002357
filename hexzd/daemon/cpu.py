"""CPU accounting: each worker's share of the machine.

Workers report their own CPU time (every thread's, `time.process_time`)
every few seconds; the daemon turns the reports into shares of the cores
this process may run on. Evaluation (the duel worker: duels, rating
matches, perfect-play checks) is held to `evaluation.cpu_share` by a throttle in
the worker itself (hexzd.evaluation.throttle), since only the worker can
pause between moves.
"""

import time

from hexzd.evaluation.throttle import usable_cores


class CpuShares:
    """The workers' CPU time, from their reports, as shares of the machine."""

    def __init__(self, cores: int | None = None):
        self.cores = cores or usable_cores()
        self.started = time.monotonic()
        self.reported = Totals()  # the workers' CPU seconds as they report them
        self.total: dict[str, float] = {}  # worker name -> CPU seconds since the daemon started
        self.window: dict[str, float] = {}  # CPU seconds since window_start
        self.window_start = time.monotonic()

    def report(self, worker: str, cpu_seconds: float) -> float:
        """Takes a worker's running total of CPU seconds; returns what it spent since its last report."""
        spent = self.reported.report(worker, cpu_seconds)
        self.total[worker] = self.total.get(worker, 0.0) + spent
        self.window[worker] = self.window.get(worker, 0.0) + spent
        return spent

    def recent(self) -> dict[str, float]:
        """Each worker's share since the last call: what the progress line and metrics show."""
        now = time.monotonic()
        elapsed = max(now - self.window_start, 1e-9) * self.cores
        shares = {worker: spent / elapsed for worker, spent in self.window.items()}
        self.window_start, self.window = now, {}
        return shares

    def overall(self, prefix: str = "") -> float:
        """The share of the machine that workers named `prefix...` took since the daemon started."""
        spent = sum(s for worker, s in self.total.items() if worker.startswith(prefix))
        return spent / (max(time.monotonic() - self.started, 1e-9) * self.cores)


class Totals:
    """A running total that each worker reports (CPU seconds, evaluations served), summed over workers and restarts."""

    def __init__(self):
        self.last: dict[str, float] = {}
        self.sum = 0.0

    def report(self, worker: str, value: float) -> float:
        """Takes a worker's running total; returns what it added since its last report."""
        before = self.last.get(worker, 0.0)
        added = value - before if value >= before else value  # a restart starts from 0
        self.last[worker] = value
        self.sum += added
        return added
