"""Ingest: the workers' results, from the daemon's PULL socket into the state file.

Results are taken as they come and written in batches (Pending), one
transaction each, every message by its handler `_on_<kind>` (the kinds of
hexzd.daemon.messages). While the file cannot be written, the batch is kept,
retried with a growing pause, and later results wait queued in ZeroMQ. The
updates a batch brings (a new best model) are published once it is committed.

A batch is never lost: one whose writing raises anything else is kept and the
error raised (the loop is restarted, hexzd.daemon.supervisor.Loops); the next
flush writes it a message at a time, and drops, with an error event and its
traceback, only a message that raises alone.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import zmq

from hexzd.daemon import messages as m
from hexzd.daemon.rundir import limit, message_limit
from hexzd.daemon.supervisor import describe
from hexzd.evaluation import scale

if TYPE_CHECKING:
    from hexzd.daemon.core import Daemon

BATCH = 512  # the most messages one transaction takes


@dataclass
class Pending:
    """Rows waiting for one transaction, kept while the file cannot be written."""

    messages: list = field(default_factory=list)
    failing_since: float | None = None
    suspect: bool = False  # the last batch raised: the next is written a message at a time


class Ingest:
    """Takes the workers' results and writes them; the daemon's `pending` is its batch."""

    def __init__(self, daemon: Daemon):
        self.daemon = daemon
        self.flops_per_eval: dict[int, int] = {}  # each model's, read once from the state file

    def bind(self, context) -> None:
        self.pull = context.socket(zmq.PULL)
        limit(self.pull, message_limit(self.daemon.config))  # a larger frame drops its sender's connection
        self.pull.bind(self.daemon.run_dir.results)
        self.daemon.run_dir.private(self.daemon.run_dir.results)

    async def run(self) -> None:
        """Takes results as they come; writes them in batches, one transaction each."""
        pending = self.daemon.pending
        while True:
            if pending.failing_since is None:  # while the file fails, leave results queued in zmq
                if not pending.messages:  # (a batch kept from before a restart is written first)
                    self.take(await self.pull.recv())
                while len(pending.messages) < BATCH and await self.pull.poll(0):
                    self.take(await self.pull.recv())
            await self.flush()
            if pending.failing_since is not None:
                await asyncio.sleep(min(30.0, 1.0 + time.monotonic() - pending.failing_since))

    async def drain(self) -> None:
        while await self.pull.poll(0):
            self.take(await self.pull.recv())

    def take(self, frame: bytes) -> None:
        pending = self.daemon.pending
        try:
            message = m.decode(frame)
            if isinstance(message, m.Live):  # shown, never stored: the latest replaces the last
                self.daemon.live[message.worker] = message
            elif isinstance(message, m.Nodes):  # the cluster's nodes: shown, never stored, the latest kept
                self.daemon.nodes = message
            else:
                pending.messages.append(message)
        except m.BadMessage as e:
            pending.messages.append(
                m.Event(level="warning", source="daemon", message=f"dropped a malformed message: {e}")
            )

    async def flush(self) -> None:
        """Writes the pending messages in one transaction; on failure keeps them (see the module's doc)."""
        daemon, pending = self.daemon, self.daemon.pending
        if not pending.messages:
            return
        batch, pending.messages = pending.messages, []
        if pending.suspect:
            pending.suspect = False
            await self._write_one_by_one(batch)
            return
        after = []  # updates to publish once committed
        try:
            await daemon._transaction(lambda: self._write(batch, after))
        except sqlite3.IntegrityError:
            await self._write_one_by_one(batch)
            return
        except sqlite3.Error as e:  # locked, disk full, I/O: keep everything, retry later
            self._hold(batch, e)
            return
        except BaseException as e:  # stopping (the shutdown's last flush writes them), or a failure
            pending.messages = batch + pending.messages
            pending.suspect = not isinstance(e, asyncio.CancelledError)
            raise
        await self._writable_again()
        for update in after:
            await daemon._publish(update)

    def _hold(self, messages: list, error: sqlite3.Error) -> None:
        """Keeps `messages` for a later flush: the file cannot be written now."""
        pending = self.daemon.pending
        pending.messages = messages + pending.messages
        if pending.failing_since is None:
            pending.failing_since = time.monotonic()
        self.daemon._cannot_write(error)

    async def _writable_again(self) -> None:
        daemon, pending = self.daemon, self.daemon.pending
        if daemon.disk_full:
            daemon.disk_full = False
            await daemon._event("info", "daemon", "the disk has room again: self-play goes on")
            await daemon._announce_pause()
        if pending.failing_since is not None:
            seconds = time.monotonic() - pending.failing_since
            pending.failing_since = None
            await daemon._event(
                "warning",
                "daemon",
                f"{daemon.db} could not be written for {seconds:.0f} s "
                f"({daemon.write_error}); it is writable again and the results held meanwhile are saved",
            )

    async def _write_one_by_one(self, batch) -> None:
        """Writes each message alone, dropping (and reporting) those the schema refuses or
        that raise; while the file cannot be written, the rest are kept."""
        for i, message in enumerate(batch):
            after = []
            try:
                await self.daemon._transaction(lambda message=message, after=after: self._write([message], after))
            except sqlite3.IntegrityError as e:
                self._dropped(message, "warning", f"the state file refuses: {e}")
                continue
            except sqlite3.Error as e:
                self._hold(batch[i:], e)
                return
            except asyncio.CancelledError:
                self.daemon.pending.messages[:0] = batch[i:]
                raise
            except Exception as e:
                self._dropped(message, "error", f"writing it raised\n{describe(e)}")
                continue
            for update in after:
                await self.daemon._publish(update)
        await self._writable_again()

    def _dropped(self, message, level: str, why: str) -> None:
        kind = m.KIND_OF[type(message)]
        self.daemon.pending.messages.append(
            m.Event(level=level, source="daemon", message=f"dropped a {kind} message {why}")
        )

    async def _write(self, batch, after) -> None:
        for message in batch:
            handler = getattr(self, f"_on_{m.KIND_OF[type(message)]}", None)
            if handler is None:
                await self.daemon._event_row(
                    m.Event(
                        level="warning", source="daemon", message=f"a worker sent a {m.KIND_OF[type(message)]} message"
                    )
                )
            else:
                await handler(message, after)

    # -- one handler a kind: each writes its rows and keeps the daemon's tallies -----------

    async def _on_event(self, e: m.Event, after) -> None:
        await self.daemon._event_row(e)
        if e.level != "debug":
            self.daemon.out(f"{e.level}: {e.source}: {e.message}")

    async def _on_hello(self, hello: m.Hello, after) -> None:
        daemon = self.daemon
        await daemon._event_row(m.Event(level="debug", source=hello.worker, message=f"up (pid {hello.pid})"))
        worker = daemon.supervisor.workers.get(hello.worker)
        if worker is not None and worker.kind == "duel":
            told = await daemon.scheduler.restarted(daemon.best)
            if told is not None:
                await self._on_event(m.Event(level=told[0], source="duel", message=told[1]), after)

    async def _on_match_start(self, s: m.MatchStart, after) -> None:
        self.daemon.scheduler.started(s.duel_id)

    async def _on_metrics(self, metrics: m.Metrics, after) -> None:
        daemon, values = self.daemon, metrics.values
        if "cpu_seconds" in values:  # a worker's running totals: shares and rates, stored each tick
            daemon.counters["cpu_seconds"] += daemon.cpu.report(metrics.source, values["cpu_seconds"])
            if "evals_served" in values:
                daemon.served.report(metrics.source, values["evals_served"])
                daemon.settling[metrics.source] = bool(values.get("settling"))
            return
        await daemon.store.add_metrics(time.time(), metrics.source, values)
        if "train_step" in values:
            daemon.counters["train_step"] = values["train_step"]
        if "train_waiting" in values:
            daemon.trainer_waiting.append(values["train_waiting"])

    async def _on_game(self, game: m.Game, after) -> None:
        if not await self.daemon.store.add_game(time.time(), game):
            return  # a repeat (a cluster batch delivered twice): stored and counted once
        c = self.daemon.counters
        c["games"] += 1
        c["positions"] += game.length
        c["evals"] += game.evals
        c["selfplay_flops"] += game.evals * await self._flops_per_eval(game.model_id)
        c["accel_seconds"] += game.seconds

    async def _flops_per_eval(self, model_id: int | None) -> int:
        if model_id is None:
            return 0
        if model_id not in self.flops_per_eval:
            self.flops_per_eval[model_id] = await self.daemon.store.flops_per_eval(model_id)
        return self.flops_per_eval[model_id]

    async def _on_snapshot(self, s: m.SnapshotMade, after) -> None:
        daemon, c = self.daemon, self.daemon.counters
        c["accel_seconds"] += s.train_seconds
        c["train_step"], c["train_flops"] = s.train_step, s.train_flops
        model_id = await daemon.store.add_snapshot(time.time(), s, c, daemon.ticks.age())
        daemon.out(f"info: trainer: snapshot {model_id} at step {s.train_step}")
        await daemon.scheduler.schedule(daemon.best)

    async def _on_match_game(self, g: m.MatchGame, after) -> None:
        if await self.daemon.store.add_duel_game(time.time(), g):
            self.daemon.scheduler.ratings_stale = True  # refitted on the next tick

    async def _on_checking(self, c: m.Checking, after) -> None:
        self.daemon.scheduler.checking(c.model_id, c.done)

    async def _on_perfect_play(self, p: m.PerfectPlay, after) -> None:
        await self.daemon.store.add_perfect_play(time.time(), p)

    async def _on_match_end(self, d: m.MatchEnd, after) -> None:
        daemon, scheduler = self.daemon, self.daemon.scheduler
        duel = await daemon.store.open_duel(d.duel_id)
        if duel is None:
            scheduler.ended(d.duel_id)
            return  # a repeat from a restarted worker, or the end of a match given up
        candidate, opponent, sims, opponent_sims, engine = duel
        now = time.time()
        await daemon.store.end_duel(now, d)
        scheduler.ratings_stale = True
        llr = f", llr {d.llr:.2f}" if d.llr is not None else ""
        daemon.out(
            f"info: duel {d.duel_id}: {scale.player(candidate, sims)} vs "
            f"{scale.player(opponent, opponent_sims, engine)} {d.result}: {d.wins}-{d.losses}{llr}"
        )
        if d.error:  # an outside engine broke: its games so far count, and it rests
            message = f"duel {d.duel_id}: {d.error}; {scheduler.engine_failed(engine)}"
            await self._on_event(m.Event(level="error", source="duel", message=message), after)
        if d.result == "accepted":
            await daemon.store.promote(now, candidate, d.duel_id, d.wins / max(1, d.wins + d.losses))
            await daemon._event_row(
                m.Event(
                    level="info",
                    source="daemon",
                    message=(f"model {candidate} promoted over {opponent or 'random rollouts'}: {d.wins}-{d.losses}"),
                )
            )
            daemon.best = candidate
            after.append(m.Best(model_id=candidate))
        scheduler.ended(d.duel_id)
        await scheduler.schedule(daemon.best)
        if candidate is None and opponent is None and engine in (None, scale.PERFECT):
            daemon.ladder_stale = True  # kept on the next tick, once committed
