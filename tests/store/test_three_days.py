"""Three days of a run, written at the daemon's rates through its own writers, stay within a bound.

`three_days` plays the daemon's ticks (every daemon.progress_seconds, 10 s) on a
clock of its own: each tick writes what a day-long run writes in 10 s, on the
2-core CPU that docs/results.md measures (5x5, default config), then runs the
daemon's retention (hexzd.daemon.ticks: games, snapshot weights, events,
metrics, tuner decisions, config versions, logs). Per tick:
    games      GAMES_PER_S * 10 self-play games of 12 moves, 400-byte policies
    metrics    the daemon's 5 rates and 7 workers' CPU shares; the trainer's 7
               values every 2 s
    events     one (a worker's hello, a duel's end, a tuner's reason)
    tuning     one decision a minute
    config     a config.toml version an hour
    snapshots  one every 5 minutes (the default network's real weights and
               checkpoint), one promoted every half hour
    logs       1 kB a second into each of 6 logs
and the daemon restarts once a day. `python tests/store/test_three_days.py`
prints the figures for the full three days.
"""

import asyncio
import os
import shutil
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

import pytest
from states import game, snapshot_made, trained_snapshot

from hexzd.config import Config
from hexzd.daemon.core import Daemon
from hexzd.train.tuner import Decision

TICK = 10.0
GAMES_PER_S = 5.0
LOGS = ("daemon", "selfplay-0", "selfplay-1", "trainer", "duel", "engine-mohex")
LOG_BYTES_PER_S = 1000


def three_days(where: Path, days: float = 3.0, games_per_s: float = GAMES_PER_S, config: Config | None = None) -> dict:
    """Writes `days` of a run into where/run.sqlite and its run directory; the figures."""
    config = config or Config()
    weights, checkpoint = trained_snapshot(config.game.board_size, int(config.model.blocks), int(config.model.channels))
    policy = os.urandom(400)  # incompressible: as large as a 12-move 5x5 game's blob can be
    daemon = Daemon(where / "config.toml", where / "run.sqlite", out=lambda line: None)
    daemon.config = config
    daemon.run_dir.make()
    ticks = int(days * 86_400 / TICK)
    figures: dict = {"ticks": ticks, "retention_seconds": [], "rotations": 0}
    written = dict.fromkeys(("games", "metrics", "events"), 0)

    async def run():
        await daemon.open()
        t0 = time.time()
        carry, model_id, snapshots = 0.0, None, 0
        try:
            for k in range(ticks):
                at = t0 + k * TICK
                if k % int(86_400 / TICK) == 0:  # a daemon (re)start: a run, for thinning
                    if k:
                        await daemon._transaction(
                            lambda at=at: daemon.store.add_event(at, "info", "daemon", "stopping: signal SIGTERM")
                        )
                    await daemon._transaction(
                        lambda at=at: daemon.store.add_event(at, "info", "daemon", "started (pid 1) on run.sqlite")
                    )
                carry += games_per_s * TICK
                games, carry = int(carry), carry - int(carry)

                async def writes(at=at, games=games, k=k):
                    for g in range(games):
                        await daemon.store.add_game(
                            at + g * TICK / max(1, games), GAME.model_copy(update={"policy": policy})
                        )
                    await daemon.store.add_metrics(at, "daemon", dict.fromkeys(RATES, 1.0))
                    for worker in WORKERS:
                        await daemon.store.add_metrics(at, worker, {"cpu_share": 0.1})
                    for s in range(int(TICK / 2)):
                        await daemon.store.add_metrics(at + 2 * s, "trainer", dict.fromkeys(TRAINER, 0.5))
                    await daemon.store.add_event(at, "debug", WORKERS[k % len(WORKERS)], "up (pid 2)")
                    if k % 6 == 0:
                        await daemon.store.add_tuning(at, [Decision("sims", 32, 40, "positions/s rose")])
                    if k % 360 == 0:
                        await daemon.store.add_config(at, CONFIG_TEXT, True, None)

                await daemon._transaction(writes)
                written["games"] += games
                written["metrics"] += len(RATES) + len(WORKERS) + int(TICK / 2) * len(TRAINER)
                written["events"] += 1
                if k % 30 == 0:  # a snapshot every 5 minutes; every 6th promoted
                    snapshots += 1
                    s = snapshot_made(weights, checkpoint, train_step=200 * snapshots)
                    model_id = await _add_snapshot(daemon, at, s)
                    if snapshots % 6 == 0:
                        await daemon._transaction(lambda at=at, i=model_id: daemon.store.promote(at, i, None, 0.6))
                sizes = []
                for name in LOGS:
                    with open(daemon.run_dir.log(name), "ab") as log:
                        log.write(b"x" * int(LOG_BYTES_PER_S * TICK))
                        sizes.append(log.tell())
                started = time.perf_counter()
                await daemon.ticks._retain()
                figures["retention_seconds"].append(time.perf_counter() - started)
                after = [daemon.run_dir.log(name).stat().st_size for name in LOGS]
                figures["rotations"] += sum(a < b for a, b in zip(after, sizes))
        finally:
            await daemon.store.close()

    asyncio.run(run())
    with sqlite3.connect(where / "run.sqlite") as c:
        figures["rows"] = {
            table: c.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
            for table in ("games", "models", "metrics", "events", "tuning", "config_history")
        }
        figures["written"] = written
        figures["deleted"] = {table: n - figures["rows"][table] for table, n in written.items()}
        figures["weights_kept"] = c.execute("SELECT COUNT(*) FROM models WHERE weights IS NOT NULL").fetchone()[0]
        figures["free_pages"] = c.execute("PRAGMA freelist_count").fetchone()[0]
    figures["file_bytes"] = (where / "run.sqlite").stat().st_size
    figures["wal_bytes"] = _size(where / "run.sqlite-wal")
    figures["run_dir_bytes"] = sum(_size(p) for p in daemon.run_dir.path.iterdir())
    figures["snapshot_bytes"], figures["checkpoint_bytes"] = len(weights), len(checkpoint)
    return figures


async def _add_snapshot(daemon, at, s) -> int:
    result = []

    async def write():
        result.append(await daemon.store.add_snapshot(at, s, daemon.counters, 0.0))

    await daemon._transaction(write)
    return result[0]


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


RATES = ("games_per_s", "positions_per_s", "evals_per_s", "train_step_per_s", "served_per_s")
WORKERS = ("daemon", "selfplay-0", "selfplay-1", "selfplay-2", "selfplay-3", "trainer", "duel")
TRAINER = ("train_step", "window", "skipped_games", "train_waiting", "policy_loss", "value_loss", "lr")
CONFIG_TEXT = "x" * 6000  # a config.toml with its comments
GAME = game(board_size=5, sims=32, moves="a1b2c3d4e5a2b3c4d5e1a3b4", length=12, evals=384, seconds=0.1)


def bound(config: Config, figures: dict) -> int:
    """The bound on the state file: every retention limit full, at these rows' sizes (with SQLite's
    pages and indexes: a row of games 500 bytes, of metrics 60, of events 120, of tuning 80, a
    config version 6 kB) and the snapshot weights kept, a quarter more; and the pages that a
    snapshot frees and the next reuses: two checkpoints and two snapshots' weights."""
    keep = config.retention
    window_games = keep.window_multiple * config.train.window / 12
    rows = (
        500 * (window_games + keep.old_games)
        + 60 * keep.metrics_rows
        + 120 * keep.events_rows
        + 80 * keep.tuning_rows
        + 6000 * keep.config_rows
    )
    weights, checkpoint = figures["snapshot_bytes"], figures["checkpoint_bytes"]
    return int(1.25 * (rows + weights * figures["weights_kept"]) + 2 * (checkpoint + weights))


@pytest.mark.slow
def test_three_days_of_a_run_stay_within_the_bound():
    where = Path(tempfile.mkdtemp(prefix="hz", dir="/tmp"))
    try:
        figures = three_days(where)
    finally:
        shutil.rmtree(where, ignore_errors=True)
    _check(figures, Config(), days=3.0)


def test_an_hour_with_small_limits_stays_within_them():
    """An hour and a bit at a tenth of the games, with small limits, so that the thinning of
    games, metrics and events and the rotation of logs happen, many times over, within the
    test's seconds (tests/store/test_retention.py thins every table to its limit)."""
    where = Path(tempfile.mkdtemp(prefix="hz", dir="/tmp"))
    config = Config(
        train={"window": 2000},
        retention={
            "old_games": 500,
            "metrics_rows": 2000,
            "events_rows": 100,
            "tuning_rows": 200,
            "config_rows": 20,
            "log_mb": 0.1,
            "log_files": 1,
        },
    )
    try:
        figures = three_days(where, days=0.05, games_per_s=0.5, config=config)
    finally:
        shutil.rmtree(where, ignore_errors=True)
    assert figures["deleted"]["metrics"] > 10_000 and figures["deleted"]["events"] > 200
    assert figures["deleted"]["games"] > 1000 and figures["rotations"] > 10
    _check(figures, config, days=0.05)


def _check(figures: dict, config: Config, days: float) -> None:
    keep, rows = config.retention, figures["rows"]
    assert rows["metrics"] <= keep.metrics_rows and rows["events"] <= keep.events_rows
    assert rows["tuning"] <= keep.tuning_rows and rows["config_history"] <= keep.config_rows
    window_games = keep.window_multiple * config.train.window / 12
    assert rows["games"] <= window_games + keep.old_games + 1
    assert figures["file_bytes"] <= bound(config, figures)
    logs = len(LOGS) * (keep.log_files + 1) * keep.log_mb * 1e6 + LOG_BYTES_PER_S * TICK * len(LOGS)
    assert figures["run_dir_bytes"] - figures["wal_bytes"] <= logs + 1e6
    assert figures["weights_kept"] <= days * 86_400 / 300 / keep.snapshot_every + days * 48 + 2


if __name__ == "__main__":
    days = float(sys.argv[1]) if len(sys.argv) > 1 else 3.0
    where = Path(tempfile.mkdtemp(prefix="hz", dir="/tmp"))
    try:
        started = time.perf_counter()
        figures = three_days(where, days=days)
        seconds = figures.pop("retention_seconds")
        figures["retention_ms"] = {
            "mean": round(1000 * sum(seconds) / len(seconds), 2),
            "max": round(1000 * max(seconds), 1),
            "last_day_mean": round(1000 * sum(seconds[-8640:]) / len(seconds[-8640:]), 2),
        }
        figures["bound_bytes"] = bound(Config(), figures)
        figures["wall_seconds"] = round(time.perf_counter() - started)
        print(figures)
    finally:
        shutil.rmtree(where, ignore_errors=True)
