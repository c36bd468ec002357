"""The throttle that holds evaluation to a share of the machine's CPU, and
the split of evaluation's CPU between promotion duels and rating matches.

The duel worker (duels, rating matches, perfect-play checks) and `hexzd
league` run beside self-play and training; each waits between moves once
it runs ahead of its share, since only the process itself can pause there.
"""

import os
import time

CPU_BURST = 5.0  # CPU-seconds a throttled process may run ahead of its share before it waits


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


def ratings_due(spent: dict[str, float], share: float, running: float = 0.0) -> bool:
    """Whether rating matches are owed CPU time: they get `share` of evaluation's.

    spent: CPU-seconds of the finished duels by kind ('promotion', 'rating'), as in the
    state file; running: those of a measurement under way, which count as ratings'.
    """
    rating = spent.get("rating", 0.0) + running
    return rating <= share * (sum(spent.values()) + running)
