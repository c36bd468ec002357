"""CPU accounting: each worker's share of the machine, and the throttle that caps evaluation's.

Workers report their own CPU time (every thread's, `time.process_time`)
every few seconds; the daemon turns the reports into shares of the cores
this process may run on. Evaluation (the duel worker: duels, rating
matches, perfect-play checks) is held to `duel.cpu_share` by a throttle in
the worker itself, since only the worker can pause between moves.
"""

import os
import time

CPU_BURST = 5.0  # CPU-seconds a throttled worker may run ahead of its share before it waits


def usable_cores() -> int:
    """The cores this process may run on (its affinity where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


class Throttle:
    """Keeps this process's CPU use within a share of the machine's cores.

    A token bucket on the process's CPU time: credit grows at share * cores
    CPU-seconds per wall second, up to CPU_BURST, and work spends it. In
    debt, the process waits until the credit is back to zero, so evaluation
    cannot take more than its share from self-play and training, yet a short
    burst (a duel's last moves) is not held up.
    """

    def __init__(self, cores: int | None = None, burst: float = CPU_BURST):
        self.cores, self.burst = cores or usable_cores(), burst
        self.at, self.cpu, self.credit = time.monotonic(), time.process_time(), 0.0

    def wait(self, share: float) -> float:
        """Seconds to wait now to stay within `share` (0 < share <= 1) of the cores."""
        now, cpu = time.monotonic(), time.process_time()
        rate = share * self.cores
        self.credit = min(self.credit + (now - self.at) * rate, self.burst) - (cpu - self.cpu)
        self.at, self.cpu = now, cpu
        return max(0.0, -self.credit / rate)


class CpuShares:
    """The workers' CPU time, from their reports, as shares of the machine."""

    def __init__(self, cores: int | None = None):
        self.cores = cores or usable_cores()
        self.started = time.monotonic()
        self.last: dict[str, float] = {}  # worker -> its last reported CPU seconds
        self.total: dict[str, float] = {}  # worker name -> CPU seconds since the daemon started
        self.window: dict[str, float] = {}  # CPU seconds since window_start
        self.window_start = time.monotonic()

    def report(self, worker: str, cpu_seconds: float) -> None:
        before = self.last.get(worker, 0.0)
        spent = cpu_seconds - before if cpu_seconds >= before else cpu_seconds  # a restart starts from 0
        self.last[worker] = cpu_seconds
        self.total[worker] = self.total.get(worker, 0.0) + spent
        self.window[worker] = self.window.get(worker, 0.0) + spent

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
