"""The daemon: supervises the workers, owns the state file, follows config.toml.

One asyncio process, its concerns each in a module:
    supervisor  starts K self-play workers, a trainer and a duel worker,
                restarts a crashed one with doubling backoff, logs why
                (hexzd.daemon.supervisor)
    ingest      PULL: results from the workers, written in transactions
                (hexzd.daemon.ingest)
    scheduler   the next duel or rating match, and the ratings
                (hexzd.daemon.scheduler)
    control     ROUTER: status / stop / pause / resume / reload for the CLI and
                dashboard (hexzd.daemon.router)
    watch       config.toml, re-read when it changes: a valid edit is applied
                within seconds, a bad one refused with its key and line
                (hexzd.daemon.reconfigure)
    tick        progress lines, metrics, budgets, the tuner, ratings, retention
                (hexzd.daemon.ticks)
    tensorboard the state file's new rows as TensorBoard event files, when
                [logging] tensorboard names a folder
                (hexzd.daemon.tensorboard_live)
This module holds the Daemon: the state they share (counters, best model,
pending results, whether it is paused), its start, transactions and events,
signals and shutdown. Each of those long-running concerns runs supervised
(hexzd.daemon.supervisor.Loops): a failure is an error event with its
traceback and a restart; repeated failure stops the daemon, exit code 1.

It is the state file's only writer (every statement is in hexzd.store.writes).
Everything the run needs to resume (the best model, the trainer's
checkpoint, the counters) is in the file, so a restart, even after
`kill -9`, carries on where the last commit left it.
"""

import asyncio
import contextlib
import os
import signal
import sqlite3
import sys
import time
from pathlib import Path

import zmq
import zmq.asyncio

from hexzd import store
from hexzd.daemon import messages as m
from hexzd.daemon.cpu import CpuShares, Totals
from hexzd.daemon.ingest import Ingest, Pending
from hexzd.daemon.reconfigure import ConfigFile
from hexzd.daemon.router import Control
from hexzd.daemon.rundir import CONTROL_LIMIT, Follow, RunDir, limit
from hexzd.daemon.scheduler import Scheduler
from hexzd.daemon.stalls import Stalls
from hexzd.daemon.supervisor import Loops, Supervisor, Worker, describe
from hexzd.daemon.tensorboard_live import LiveExport
from hexzd.daemon.ticks import Ticks
from hexzd.evaluation import scale
from hexzd.processes import STOP_SIGNALS
from hexzd.store import ladder
from hexzd.store.writes import Writer
from hexzd.train.tuner import GpuMeter, Tuner

COUNTERS = (
    "games",
    "positions",
    "evals",
    "selfplay_flops",
    "train_flops",
    "accel_seconds",
    "wall_seconds",
    "train_step",
    "cpu_seconds",  # every process's CPU time: the daemon's, self-play's (rollouts too), the trainer's, evaluation's
)
STOP_GRACE = 20.0  # seconds the workers get to finish up before they are killed


class Daemon:
    """One run's daemon: the state its concerns share, each concern an object holding it."""

    def __init__(self, config_path, db, headless: bool = True, duration: float | None = None, out=None):
        self.config_path, self.db = Path(config_path), Path(db)
        self.run_dir = RunDir.of(self.db)
        self.headless, self.duration = headless, duration
        self.out = out or self._print
        self.supervisor = Supervisor(
            self.db,
            self.run_dir,
            lambda: self.config,
            self._warn,
            paused=self.halted,
            exited=self._exited,
            each_round=self._announce_pause,
        )
        self.loops = Loops(self._loop_failed, lambda reason: self.stop(reason, code=1))
        self.meter: GpuMeter | None = None
        self.counters = dict.fromkeys(COUNTERS, 0.0)
        self.cpu = CpuShares()
        self.served = Totals()  # network evaluations as self-play's inference services ran them
        self.settling: dict[str, bool] = {}  # self-play workers still playing out games of an older batch shape
        self.best: int | None = None
        self.paused = False  # by a client
        self.disk_full = False  # the state file's disk: self-play waits for room (hexzd.daemon.ingest)
        self.stopping: asyncio.Event | None = None
        self.stop_reason, self.exit_code = "", 0
        self.last_out_error = float("-inf")
        self.pending = Pending()
        self.write_lock = asyncio.Lock()
        self.last_write_error, self.write_error = float("-inf"), ""
        self.started = time.monotonic()
        self.trainer_waiting: list[float] = []  # the trainer's reports since the last tick, for the tuner
        self.live: dict[str, m.Live] = {}  # each self-play worker's game in progress: the dashboard's board
        self.nodes: m.Nodes | None = None  # the Ray cluster's nodes, as the cluster worker last told
        self.cpu_recent: dict[str, float] = {}  # each worker's CPU share over the last tick
        self.ladder_stale = False  # a ladder match ended: its games go to the kept ladder
        self.ingest = Ingest(self)
        self.control = Control(self)
        self.config_file = ConfigFile(self)
        self.ticks = Ticks(self)
        self.tensorboard = LiveExport(self)  # [logging] tensorboard
        self.stalls = Stalls(lambda level, message: self._event(level, "daemon", message))
        self.follow = Follow(self.run_dir.log("daemon"))  # its output, when started in the background

    # -- start and stop ------------------------------------------------------

    async def open(self) -> None:
        """The state file, migrated, with this run's config checked against it."""
        self.store = Writer(await store.writer(self.db))
        self.scheduler = Scheduler(self.store, lambda: self.config, self.ticks.age)

    async def run(self) -> int:
        """Runs until stopped; returns the process exit code."""
        self.lock = self.run_dir.lock()  # first: a second daemon must not touch anything
        try:
            self.config = self.config_file.load()
            self.control.check_keys()  # before the state file is opened: a refusal touches nothing
        except BaseException:
            self.lock.close()
            raise
        self.context = zmq.asyncio.Context()
        self.supervisor.gpus = self.config_file.gpus()
        self.tuner = Tuner(self.config.tune, self.config.selfplay.sims, self.config.selfplay.batch)
        await self.open()
        try:
            await self.config_file.check_fixed()
            await self._load_state()
            await self._keep_ladder(start=True)
            self.run_dir.write_config(self.config_file.in_force().model_dump())
            await self.config_file.record(self.config_file.text, True, None)
            self._bind()
            self.stopping = asyncio.Event()
            self._signals()
            await self._event("info", "daemon", f"started (pid {os.getpid()}) on {self.db}")
            self.meter = GpuMeter.open()
            if self.meter is None:
                await self._event("info", "tuner", f"{GpuMeter.why_not}; batch sizes follow throughput")
            for name, loop in (
                ("workers", self.supervisor.run),
                ("ingest", self.ingest.run),
                ("control", self.control.run),
                ("config", self.config_file.watch),
                ("ticks", self.ticks.run),
                ("gpu", self.ticks.sample_gpu),
                ("tensorboard", self.tensorboard.run),
                ("stalls", self.stalls.run),
            ):
                self.loops.start(name, loop)
            self.stalls.start()
            await self.stopping.wait()
            self.loops.cancel("workers")  # no restarts while the workers stop
            await self._shutdown(list(self.loops.tasks.values()))
            await self._keep_ladder()  # the games of a ladder match the stop cut short
            await self.tensorboard.close()  # the last commit's rows too
            return self.exit_code
        finally:
            self.stalls.close()
            await self.store.close()
            if self.meter is not None:
                self.meter.close()
            self.context.destroy(linger=0)
            self.lock.close()

    async def _keep_ladder(self, start: bool = False) -> None:
        """Keeps this run's reference games in the kept ladder (hexzd.store.ladder); at the
        start of a fresh state file, first copies in every other run's. A ladder file that
        cannot be used is named, and the run plays its own ladder."""
        where = self.config.ratings.ladder_file
        if not where:
            return
        path, game = Path(where).expanduser(), self.config.game
        key, run = scale.ladder_key(game.board_size, game.swap), await self.store.run_id()
        try:
            if start and not await self.store.has_duels():
                games = await asyncio.to_thread(ladder.kept, path, key, run)
                if games:
                    await self._transaction(lambda: self.store.add_kept_ladder(games))
                    await self._event("info", "ratings", f"the ladder starts from {len(games)} games kept in {path}")
            await asyncio.to_thread(ladder.keep, path, key, run, await self.store.own_ladder_games())
        except (sqlite3.Error, OSError, store.StateFileError) as e:
            await self._warn(f"the kept ladder {path} cannot be used: {e}")

    async def _load_state(self) -> None:
        self.counters = await self.store.counters(COUNTERS)
        self.best = await self.store.best_model()

    def _bind(self) -> None:
        """The three sockets, each with a size limit and 0600 (hexzd.daemon.rundir)."""
        self.control.bind(self.context)  # first: it refuses a tcp_port without keys
        self.ingest.bind(self.context)
        self.pub = self.context.socket(zmq.PUB)
        limit(self.pub, CONTROL_LIMIT)  # it reads only subscriptions
        self.pub.bind(self.run_dir.updates)
        self.run_dir.private(self.run_dir.updates)

    def _signals(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in STOP_SIGNALS:
            loop.add_signal_handler(sig, self._on_signal, sig)

    def _on_signal(self, sig) -> None:
        if self.stopping.is_set():  # the second Ctrl-C: stop now
            self.out("stopping now")
            self.supervisor.kill()
            os._exit(130)
        self.out(f"{signal.Signals(sig).name}: stopping gracefully (again to force)")
        self.stop("signal " + signal.Signals(sig).name)

    def stop(self, reason: str, code: int = 0) -> None:
        """Stops the run, for `reason`; the process then exits with `code` (1: something failed)."""
        if not self.stopping.is_set():
            self.stop_reason, self.exit_code = reason, code
            self.stopping.set()

    async def _loop_failed(self, name: str, error: BaseException, backoff: float | None) -> None:
        """A supervised loop failed (hexzd.daemon.supervisor.Loops): an error event with its traceback."""
        then = f"running it again in {backoff:g} s" if backoff is not None else "it failed too often: stopping"
        self.pending.messages.append(m.Event(level="error", source=name, message=f"{then}\n{describe(error)}"))
        await self._flush()

    async def _shutdown(self, tasks) -> None:
        """Stops the workers, takes in what they flush, then the last commit."""
        await self._event("info", "daemon", f"stopping: {self.stop_reason}")
        deadline = time.monotonic() + STOP_GRACE
        while self.supervisor.any_alive() and time.monotonic() < deadline:
            # Again every second: a worker still starting up subscribes late
            # and would miss a single `Stop` (ZeroMQ's slow joiner).
            await self._publish(m.Stop())
            for _ in range(10):
                if not self.supervisor.any_alive():
                    break
                await asyncio.sleep(0.1)
        self.supervisor.kill()
        await self.supervisor.reap()
        await asyncio.sleep(0.3)  # the last results in the socket
        # Cancelled only between transactions: a task cancelled inside one could leave
        # BEGIN to run after its rollback, and the last flush would then fail.
        async with self.write_lock:
            for task in tasks:
                task.cancel()
            ended = await asyncio.gather(*tasks, return_exceptions=True)
        for task, result in zip(tasks, ended):  # supervised, a loop ends cancelled: anything else is told
            if isinstance(result, BaseException) and not isinstance(result, asyncio.CancelledError):
                await self._event("error", task.get_name(), f"ended at the stop\n{describe(result)}")
        await self.ingest.drain()
        try:
            await self._flush()
        except Exception:  # a batch that raised: the next flush writes it a message at a time
            await self._flush()
        try:
            await self.ticks.count()
        except sqlite3.Error as e:  # the last commit: what it could not write is said, not raised
            self._cannot_write(e)
        if self.pending.messages:
            self.out(f"error: daemon: {len(self.pending.messages)} results could not be written to {self.db}")
        await self.ticks.look_at_best()
        self.out(self.ticks.progress_line("stopped"))

    # -- the state file ------------------------------------------------------

    async def _transaction(self, writes) -> None:
        """Runs the coroutine function `writes` in one transaction, with the counters.

        The counters are saved inside the lock: a failed transaction puts back
        what they were when it began, after every earlier commit's increments.
        """
        async with self.write_lock:
            counters = dict(self.counters)
            await self.store.begin()
            try:
                await writes()
                await self.store.save_counters(self.counters)
                await self.store.commit()
            except BaseException:
                self.counters = counters
                await self.store.rollback()
                raise

    async def _event(self, level: str, source: str, message: str) -> None:
        """Prints an event and records it in the state file (once it can be written)."""
        self.pending.messages.append(m.Event(level=level, source=source, message=message))
        await self._flush()

    async def _warn(self, message: str) -> None:
        await self._event("warning", "daemon", message)

    def _print(self, line: str) -> None:
        """A line to standard output. One that cannot be written (stdout a file on a full disk,
        a closed pipe) is dropped, and an error event says so, once a spell of failures: the
        daemon's loops must not fail for it."""
        try:
            print(line, flush=True)
        except (OSError, ValueError) as e:
            if time.monotonic() - self.last_out_error > 600:
                message = f"cannot write to standard output: {e!r}; its lines are dropped meanwhile"
                self.pending.messages.append(m.Event(level="error", source="daemon", message=message))
                with contextlib.suppress(OSError, ValueError):
                    print(f"error: daemon: {message}", file=sys.stderr, flush=True)
            self.last_out_error = time.monotonic()

    async def _exited(self, worker: Worker, code: int) -> None:
        """A worker exited: a crash of the duel worker counts against the match it was in; the
        cluster worker's nodes are forgotten."""
        if worker.kind == "duel" and code != 0 and not self.stopping.is_set():
            self.scheduler.crashed(code, str(self.run_dir.log(worker.name)))
        if worker.kind == "cluster":  # its nodes are unknown until it is back: none shown meanwhile
            self.nodes = None

    async def _announce_pause(self) -> None:
        """Says whether the run is paused, every round of the supervisor: a worker whose
        subscription came after the last change (ZeroMQ's slow joiner) learns it within a
        second. A worker started meanwhile starts as it says (`--paused`)."""
        await self._publish(m.Pause(paused=self.halted()))

    def halted(self) -> bool:
        """Whether self-play waits: paused by a client, or the disk is full."""
        return self.paused or self.disk_full

    async def _flush(self) -> None:
        """Writes the pending messages and events (hexzd.daemon.ingest)."""
        await self.ingest.flush()

    def _cannot_write(self, error: Exception) -> None:
        """Says, once per failure spell, that the state file cannot be written. A damaged file
        (store.damaged) stops the daemon, exit code 1: no retry can write it."""
        if store.damaged(error):
            self.out(f"error: daemon: {self.db} is damaged: {error}; stopping")
            self.stop(f"the state file is damaged: {error}", code=1)
        if store.disk_full(error) and not self.disk_full:
            self.disk_full = True  # the next supervisor round pauses self-play; ingest resumes it
            message = f"disk full: {self.db} cannot be written; self-play waits until there is room"
            self.out(f"error: daemon: {message}")
            self.pending.messages.append(m.Event(level="error", source="daemon", message=message))
        now = time.monotonic()
        if now - self.last_write_error > 60:
            self.out(f"error: daemon: cannot write {self.db}: {error}; results are held and retried")
        self.last_write_error, self.write_error = now, str(error)

    async def _event_row(self, e: m.Event) -> None:
        await self.store.add_event(time.time(), e.level, e.source, e.message)

    async def _publish(self, update: m.Message) -> None:
        await self.pub.send(m.encode(update))


def parse_duration(text: str) -> float:
    """'90s', '5m', '2h', '1h30m' or plain seconds -> seconds."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    total, number = 0.0, ""
    for char in text.strip().lower():
        if char.isdigit() or char == ".":
            number += char
        elif char in units and number:
            total, number = total + float(number) * units[char], ""
        else:
            raise ValueError(f"cannot read the duration {text!r}; use e.g. 90s, 5m, 2h or 1h30m")
    if number:
        total += float(number)
    if total <= 0:
        raise ValueError(f"the duration {text!r} is not positive")
    return total
