"""The evaluation throttle and the daemon's CPU shares, on real CPU time."""

import time

import pytest

from hexzd.daemon.cpu import CpuShares
from hexzd.evaluation.throttle import Throttle


def busy(seconds: float) -> None:
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass


@pytest.mark.e2e  # a 4-second trial on real CPU time
def test_a_throttled_busy_loop_stays_within_its_share():
    """A loop that would take a whole core, held to a quarter of two cores (0.5 CPU-s/s)."""
    throttle, started, cpu = Throttle(cores=2, burst=0.2), time.monotonic(), time.process_time()
    while time.monotonic() - started < 4.0:
        busy(0.02)  # one "move"
        time.sleep(throttle.wait(0.25))
    wall, used = time.monotonic() - started, time.process_time() - cpu
    assert used <= 0.5 * wall + 0.2 + 0.15, f"{used:.2f} CPU-s in {wall:.2f} s"
    assert used >= 0.25 * wall, "throttled far below its share"


def test_shares_count_restarts_and_split_by_worker():
    shares = CpuShares(cores=4)
    shares.report("duel", 10.0)
    shares.report("duel", 12.0)
    shares.report("duel", 1.0)  # restarted: its CPU time starts again from 0
    shares.report("selfplay-0", 30.0)
    assert shares.total == {"duel": 13.0, "selfplay-0": 30.0}
    recent = shares.recent()
    assert abs(recent["selfplay-0"] / recent["duel"] - 30.0 / 13.0) < 1e-9
    assert shares.recent() == {}
    assert 0 < shares.overall("duel") < shares.overall()
