"""The daemon's tick, every daemon.progress_seconds: what is done on a clock, not on a message.

Each tick prints the progress line (headless: the counters and their rates,
the best model's rating, the budget spent and what is left of each one set),
stops the run once a budget is
spent, adds the tick's time to the counters, stores the rates and each
worker's CPU share, feeds the tuner, schedules the next duel, refits the
ratings when games came in, keeps the ladder's new games, and thins what
retention lets go (games, snapshot weights, events, metrics, tuner decisions
and config versions, each within its [retention] limit) and rotates the logs.
Between ticks the GPU meter is read every second.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from typing import TYPE_CHECKING

from hexzd.config import BudgetConfig
from hexzd.daemon import messages as m
from hexzd.daemon.rundir import rotate
from hexzd.train.tuner import Telemetry

if TYPE_CHECKING:
    from hexzd.daemon.core import Daemon

RATES = ("games", "positions", "evals", "train_step")  # the counters whose rates each tick measures


def clock(seconds: float) -> str:
    """Seconds as hh:mm:ss."""
    t = int(seconds)
    return f"{t // 3600:02d}:{t // 60 % 60:02d}:{t % 60:02d}"


def rating_text(rating: dict | None) -> str:
    """A model's rating (Writer.rating_of) with its 95% interval, or why it has no number:
    "not rated yet", or its rating_status ("too few games"), as `hexzd ratings` says it."""
    if rating is None:
        return "not rated yet"
    if rating["status"] != "rated":
        return rating["status"]
    return f"{rating['rating']:.0f} ±{rating['half_width']:.0f} (95%)"


def budget_text(budget: BudgetConfig, counters: dict, run_seconds: float, for_left: float | None) -> str:
    """What the run has spent (its time over every restart, games, PFLOP), and what is left
    of each budget that is set: [budget] hours, games, positions, pflops, and --for."""
    games, pflop = counters["games"], (counters["selfplay_flops"] + counters["train_flops"]) / 1e15
    left = [f"{clock(max(0.0, for_left))} of --for"] if for_left is not None else []
    if budget.hours:
        left.append(clock(max(0.0, budget.hours * 3600 - run_seconds)))
    if budget.games:
        left.append(f"{max(0, budget.games - games):,.0f} games")
    if budget.positions:
        left.append(f"{max(0, budget.positions - counters['positions']):,.0f} positions")
    if budget.pflops:
        left.append(f"{max(0.0, budget.pflops - pflop):.3g} PFLOP")
    spent = f"spent {clock(run_seconds)}, {games:,.0f} games, {pflop:.3g} PFLOP"
    return spent + (f"; left {', '.join(left)}" if left else "")


class Ticks:
    """The tick's work; holds when the last tick's time was counted."""

    def __init__(self, daemon: Daemon):
        self.daemon = daemon
        self.last_tick = time.monotonic()
        self.best_rating: dict | None = None  # the best model's, as last read (look_at_best)

    def unticked(self) -> float:
        """Seconds since the last tick's time was counted."""
        return time.monotonic() - self.last_tick

    def age(self) -> float:
        """The run's wall seconds so far, this tick's included."""
        return self.daemon.counters["wall_seconds"] + self.unticked()

    async def count(self) -> None:
        """Adds the time since the last tick to the counters (wall and the daemon's CPU), and saves them."""
        daemon = self.daemon
        daemon.counters["wall_seconds"] += self.unticked()
        daemon.counters["cpu_seconds"] += daemon.cpu.report("daemon", time.process_time())
        self.last_tick = time.monotonic()
        await daemon._transaction(lambda: asyncio.sleep(0))

    async def run(self) -> None:
        daemon = self.daemon
        last, served = dict(daemon.counters), daemon.served.sum
        while True:
            await asyncio.sleep(daemon.config.daemon.progress_seconds)
            elapsed = self.unticked()
            rates = {k: (daemon.counters[k] - last[k]) / elapsed for k in RATES}
            rates["served"] = (daemon.served.sum - served) / elapsed
            last, served = dict(daemon.counters), daemon.served.sum
            if daemon.headless:
                await self.look_at_best()
                daemon.out(self.progress_line(rates=rates))
            self._check_budgets()
            try:
                await self.count()
                per_s = {f"{k}_per_s": v for k, v in rates.items()}
                await daemon._transaction(lambda per_s=per_s: daemon.store.add_metrics(time.time(), "daemon", per_s))
                await daemon._transaction(self._add_cpu_shares)
                await self._tune(rates)
                await daemon._transaction(lambda: daemon.scheduler.schedule(daemon.best))
                if daemon.scheduler.ratings_stale:
                    await self._refresh_ratings()
                if daemon.ladder_stale:
                    daemon.ladder_stale = False
                    await daemon._keep_ladder()
                await self._retain()
            except sqlite3.Error as e:  # the file is locked or full: the next tick tries again
                daemon._cannot_write(e)

    async def look_at_best(self) -> None:
        """Reads the best model's rating for the progress line; a file it cannot read now keeps the last."""
        daemon = self.daemon
        try:
            self.best_rating = await daemon.store.rating_of(daemon.best) if daemon.best else None
        except sqlite3.Error:
            pass

    def progress_line(self, label: str = "", rates: dict | None = None) -> str:
        daemon = self.daemon
        c, r = daemon.counters, rates or {}
        up = time.monotonic() - daemon.started
        rate = lambda k: f" ({r[k]:,.1f}/s)" if k in r else ""  # noqa: E731
        best = f"model {daemon.best}: {rating_text(self.best_rating)}" if daemon.best else "rollouts"
        for_left = daemon.duration - up if daemon.duration else None
        duel = daemon.scheduler.line
        return (
            f"{label or 'progress'} {clock(up)} games {c['games']:,.0f}{rate('games')} positions "
            f"{c['positions']:,.0f}{rate('positions')} step {c['train_step']:,.0f}{rate('train_step')} "
            f"best {best} | {budget_text(daemon.config.budget, c, self.age(), for_left)}"
            f" | eval {daemon.cpu.overall('duel'):.0%} of CPU"
            + (f" | {duel}" if duel else "")
            + (" | paused" if daemon.paused else "")
            + (" | disk full" if daemon.disk_full else "")
        )

    def _check_budgets(self) -> None:
        daemon = self.daemon
        b, c = daemon.config.budget, daemon.counters
        spent = [
            (daemon.duration and time.monotonic() - daemon.started >= daemon.duration, "the --for duration"),
            (b.hours and c["wall_seconds"] >= b.hours * 3600, "budget.hours"),
            (b.games and c["games"] >= b.games, "budget.games"),
            (b.positions and c["positions"] >= b.positions, "budget.positions"),
            (b.pflops and c["selfplay_flops"] + c["train_flops"] >= b.pflops * 1e15, "budget.pflops"),
        ]
        for done, what in spent:
            if done:
                daemon.stop(f"{what} is spent")
                return

    async def _add_cpu_shares(self) -> None:
        """Each worker's share of the machine's CPU over the last tick (metric `cpu_share`)."""
        daemon = self.daemon
        shares = daemon.cpu.recent()
        daemon.cpu_recent.update(shares)  # a worker reports every few ticks: the panel keeps its last share
        for worker, share in shares.items():
            await daemon.store.add_metrics(time.time(), worker, {"cpu_share": share})

    async def _refresh_ratings(self) -> None:
        daemon = self.daemon
        rows = await daemon.scheduler.ratings()
        await daemon._transaction(lambda: daemon.store.replace_ratings(time.time(), rows))

    async def _retain(self) -> None:
        """Thins games older than the kept windows, prunes snapshot weights, thins the events,
        metrics, tuner decisions and config versions to their row limits, and rotates the
        run directory's logs past their size ([retention])."""
        daemon = self.daemon
        keep = daemon.config.retention
        every = 0 if keep.thin_keep == 0 else max(1, round(1 / keep.thin_keep))
        games = lambda: int(keep.window_multiple * daemon.config.train.window)  # noqa: E731
        await daemon._transaction(lambda: daemon.store.retain(games(), every, keep.snapshot_every, keep.old_games))
        limits = {
            "events": keep.events_rows,
            "metrics": keep.metrics_rows,
            "tuning": keep.tuning_rows,
            "config_history": keep.config_rows,
        }
        await daemon._transaction(lambda: daemon.store.thin_tables(limits))
        ours = {"daemon", *daemon.supervisor.workers}  # their writers follow a rename (rundir.Follow)
        for log in daemon.run_dir.logs():
            try:
                rotate(log, int(keep.log_mb * 1e6), keep.log_files, follows=log.stem in ours)
            except OSError as e:  # a full disk, say: the next tick tries again
                daemon._cannot_write(e)
        daemon.follow()  # the daemon's own output, when it is daemon.log

    # -- the tuner ------------------------------------------------------------------

    async def sample_gpu(self) -> None:
        """Reads the GPU meter every second; the tuner gets each tick's mean."""
        daemon = self.daemon
        while daemon.meter is not None:
            try:
                daemon.meter.sample()
            except RuntimeError as e:
                await daemon._event("warning", "tuner", f"the GPU meter stopped answering: {e}")
                daemon.meter = None
            await asyncio.sleep(1.0)

    async def _tune(self, rates: dict) -> None:
        """Feeds the last tick's throughput (and GPU use) to the tuner; records what it decides."""
        daemon, train = self.daemon, self.daemon.config.train
        gpu = daemon.meter.take_mean() if daemon.meter else None
        reports, daemon.trainer_waiting = daemon.trainer_waiting, []
        telemetry = Telemetry(
            positions_per_s=rates["positions"],
            evals_per_s=rates["served"],
            samples_per_s=rates["train_step"] * train.batch_size,
            reuse=train.reuse,
            gpu_util=gpu,
            trainer_waiting=sum(reports) / len(reports) if reports else None,
            settling=any(v for worker, v in daemon.settling.items() if worker in daemon.supervisor.workers),
        )
        decisions = daemon.tuner.observe(telemetry, time.monotonic())
        now = time.time()

        async def writes():
            if gpu is not None:
                await daemon.store.add_metrics(now, "daemon", {"gpu_util": gpu})
            await daemon.store.add_tuning(now, decisions)
            for d in decisions:
                await daemon._event_row(m.Event(level="info", source="tuner", message=d.reason))

        await daemon._transaction(writes)
        for d in decisions:
            daemon.out(f"info: tuner: {d.reason}")
        if decisions:
            await daemon.config_file.announce()
