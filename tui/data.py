"""What the dashboard shows, gathered without any widget: plain functions, testable alone.

`snapshot(db, history)` reads the state file through a read-only connection;
`query_daemon(db, command)` asks the daemon over its ZeroMQ control socket.
Both block briefly, so the dashboard runs them in a thread.
"""

import sqlite3
import time
from pathlib import Path

from hexzd import store
from hexzd.daemon.control import DaemonError
from hexzd.daemon.control import ask as query_daemon

__all__ = ["CHARTED", "SERIES", "DaemonError", "History", "Series", "query_daemon", "snapshot"]

SERIES = ("games_per_s", "positions_per_s", "train_step_per_s", "train_waiting", "policy_loss", "value_loss", "lr")
CHARTED = ("policy_loss", "value_loss", "evals_per_s", "positions_per_s", "train_step_per_s")
CHART_POINTS = 128  # points per charted series, whatever the run's length: about a chart's columns
READ_LIMIT = 20_000  # samples per series per refresh: a run of days catches up over a few refreshes


class Series:
    """A metric's whole history in at most `points` points.

    Each point is the mean of `stride` samples; when the points fill up,
    neighbours merge and the stride doubles. Memory and drawing cost stay
    bounded over a run of days, and the chart still spans the whole run.
    """

    def __init__(self, points: int = CHART_POINTS):
        self.points, self.stride = points - points % 2, 1
        self.xs: list[float] = []
        self.ys: list[float] = []
        self.pending: list[tuple[float, float]] = []  # the samples of the point being filled
        self.last = float("-inf")  # the time of the newest sample read

    def add(self, at: float, value: float) -> None:
        self.last = at
        self.pending.append((at, value))
        if len(self.pending) < self.stride:
            return
        x, y = self._filling()
        self.xs.append(x)
        self.ys.append(y)
        self.pending = []
        if len(self.xs) >= self.points:
            self.xs = [(a + b) / 2 for a, b in zip(self.xs[::2], self.xs[1::2])]
            self.ys = [(a + b) / 2 for a, b in zip(self.ys[::2], self.ys[1::2])]
            self.stride *= 2

    def xy(self) -> tuple[list[float], list[float]]:
        """The points, the one being filled included."""
        if not self.pending:
            return self.xs, self.ys
        x, y = self._filling()
        return self.xs + [x], self.ys + [y]

    def _filling(self) -> tuple[float, float]:
        """The point being filled: the mean time and value of its samples so far."""
        n = len(self.pending)
        return sum(a for a, _ in self.pending) / n, sum(v for _, v in self.pending) / n


class History:
    """The charted metrics since the run began, read on incrementally from where the last refresh stopped."""

    def __init__(self, names=CHARTED, points: int = CHART_POINTS):
        self.series = {name: Series(points) for name in names}
        self.started: float | None = None  # the run's start, as `hexzd report` counts it: read once

    def update(self, connection) -> None:
        if self.started is None:
            self.started = store.run_span(connection)["start"]
        for name, series in self.series.items():
            for at, value in store.samples_after(connection, name, series.last, READ_LIMIT):
                series.add(at, value)


def snapshot(db, history: History | None = None, now: float | None = None) -> dict:
    """Everything the dashboard shows from the state file, as plain data; `history` is read on too.

    `now` (default: the clock) is what "ago" counts from. A missing or
    unreadable file gives {"db", "now", "error"} and nothing else.
    """
    snap = {"db": str(db), "now": time.time() if now is None else now, "error": None, "started": None}
    if not Path(db).exists():
        snap["error"] = f"no state file at {db} yet"
        return snap
    try:
        connection = store.read_only(db, timeout=2.0)
    except store.StateFileError as e:  # not SQLite, another program's, newer, no schema yet
        snap["error"] = f"cannot open {db}: {e}"
        return snap
    try:
        snap.update(store.dashboard(connection, SERIES))
        if history is not None:
            history.update(connection)
            snap["started"] = history.started
    except sqlite3.Error as e:
        snap["error"] = f"cannot read {db}: {e}"
    finally:
        connection.close()
    return snap
