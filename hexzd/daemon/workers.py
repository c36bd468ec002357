"""Worker processes: self-play, trainer and duel, each its own process.

The daemon starts each as `python -m hexzd.daemon.workers KIND --db FILE --name NAME`,
with its thread counts in the environment (see Supervisor). A worker:
  - reads the config in force from the run directory, and the best model from
    the state file (read-only), so a restarted worker picks up where things are;
  - pushes results to the daemon (PUSH) and follows its updates (SUB);
  - exits on a `stop` update, or when its daemon is gone (its parent changed),
    so a `kill -9` of the daemon leaves no orphans behind.

The workers' loops are CPU- and accelerator-bound, so they use plain
blocking zmq sockets, polled between units of work; the daemon is asyncio.
"""
import argparse
import functools
import logging
import os
import sys
import time
from dataclasses import replace

import numpy as np
import zmq

from hexzd.daemon import messages as m
from hexzd import store
from hexzd.config import Config
from hexzd.daemon.rundir import RunDir

log = logging.getLogger("hexzd.worker")


class Link:
    """A worker's two sockets and the state that the daemon's updates set."""

    def __init__(self, run: RunDir, name: str):
        self.name, self.parent = name, os.getppid()
        self.context = zmq.Context()
        self.push = self.context.socket(zmq.PUSH)
        self.push.setsockopt(zmq.LINGER, 10_000)  # flush results on exit, up to 10 s
        self.push.connect(run.results)
        self.sub = self.context.socket(zmq.SUB)
        self.sub.setsockopt(zmq.SUBSCRIBE, b"")
        self.sub.connect(run.updates)
        self.config = Config.model_validate(run.read_config())
        self.best: int | None = None
        self.paused = self.stopping = False
        self.send(m.Hello(worker=name, pid=os.getpid()))

    def send(self, message: m.Message) -> None:
        self.push.send(m.encode(message))

    def event(self, level: str, message: str) -> None:
        self.send(m.Event(level=level, source=self.name, message=message))

    def poll(self, timeout: float = 0.0) -> bool:
        """Applies the updates that arrive within `timeout` seconds; True if any did."""
        got = False
        if os.getppid() != self.parent:  # the daemon died: do not outlive it
            self.stopping = True
            return True
        while self.sub.poll(int(timeout * 1000) if not got else 0):
            try:
                update = m.decode(self.sub.recv())
            except m.BadMessage as e:
                log.warning("dropped an update: %s", e)
                continue
            got = True
            if isinstance(update, m.Stop):
                self.stopping = True
            elif isinstance(update, m.Pause):
                self.paused = update.paused
            elif isinstance(update, m.Best):
                self.best = update.model_id
            elif isinstance(update, m.ConfigUpdate):
                self.config = Config.model_validate(update.config)
        return got

    def wait(self, seconds: float) -> None:
        """Sleeps up to `seconds`, waking early for any update."""
        deadline = time.monotonic() + seconds
        while not self.stopping and time.monotonic() < deadline:
            if self.poll(min(0.25, max(0.0, deadline - time.monotonic()))):
                return

    def close(self) -> None:
        self.sub.close(0)
        self.push.close()
        self.context.term()


def load_evaluator(db, model_id: int, config: Config):
    """The evaluator of a model in the state file, on the configured backend."""
    from hexzd.nn.inference import make_evaluator

    with store.read_only(db) as connection:
        blob = store.weights(connection, model_id)
    return make_evaluator(blob, config.device.backend, config.device.precision, config.device.threads)


# -- self-play -----------------------------------------------------------------


def selfplay(link: Link, db, seed: int) -> None:
    from hexzd.train.selfplay import Network, SelfPlay

    c = link.config
    games = SelfPlay(c.selfplay, c.game.board_size, c.game.swap, seed=seed)
    with store.read_only(db) as connection:
        link.best = store.best_model(connection)
    try:
        while not link.stopping:
            link.poll()
            if link.paused:
                link.wait(1.0)
                continue
            if link.config.selfplay != games.config:
                games.apply(link.config.selfplay)
            if link.best is not None and (games.network is None or games.network.model_id != link.best):
                evaluator = load_evaluator(db, link.best, link.config)
                games.network = Network(link.best, evaluator.evaluate)
                link.event("info", f"self-play now uses model {link.best} ({evaluator.reason})")
            for record, evals, seconds in games.move():
                link.send(m.Game(
                    worker=link.name, model_id=record.model_id, board_size=record.board_size,
                    sims=record.sims, moves=record.moves, winner=record.winner,
                    length=len(record.actions), policy=record.policy, evals=evals, seconds=seconds))
    finally:
        games.close()


# -- trainer -------------------------------------------------------------------


def trainer(link: Link, db) -> None:
    from hexzd.train.trainer import Snapshot, SqliteGames, Trainer

    with store.read_only(db) as connection:
        row = connection.execute(
            "SELECT id, checkpoint FROM models WHERE checkpoint IS NOT NULL ORDER BY id DESC LIMIT 1").fetchone()
    resume = Snapshot.from_bytes(row[1]) if row else None
    source = SqliteGames(db)
    trainer = Trainer(link.config, source, resume)
    if resume:
        link.event("info", f"trainer resumed from model {row[0]} at step {resume.step}")
    busy, last_metrics, unsaved = 0.0, time.monotonic(), 0
    losses, lr, waited = [], 0.0, 0.0  # waited: seconds spent waiting for games since the last metrics

    def publish() -> None:
        nonlocal busy, unsaved
        snapshot = trainer.snapshot()
        players = replace(snapshot, optimizer=None, rng={})
        link.send(m.Snapshot(
            train_step=snapshot.step, positions_seen=snapshot.positions_seen,
            samples_trained=snapshot.samples_trained, params=snapshot.params,
            flops_per_eval=snapshot.flops_per_eval, train_flops=float(snapshot.train_flops),
            train_seconds=busy, weights=players.to_bytes(), checkpoint=snapshot.to_bytes()))
        busy, unsaved = 0.0, 0

    try:
        while not link.stopping:
            link.poll()
            if link.config.train != trainer.config.train:
                trainer.apply(link.config)
            if link.paused:
                link.wait(1.0)
                continue
            trainer.poll()
            if time.monotonic() - last_metrics > 2.0:
                # The tuner reads "waiting" as "self-play cannot keep up": it is
                # sent while idle too, once enough games are in to train at all.
                values = {"train_step": trainer.step, "window": trainer.window.size,
                          "skipped_games": trainer.skipped}
                if trainer.ready():
                    values["train_waiting"] = min(1.0, waited / (time.monotonic() - last_metrics))
                if losses:
                    policy_loss, value_loss = np.mean(losses, axis=0)
                    values.update(policy_loss=float(policy_loss), value_loss=float(value_loss), lr=lr)
                link.send(m.Metrics(source=link.name, values=values))
                losses, waited, last_metrics = [], 0.0, time.monotonic()
            if trainer.steps_due() == 0:
                started = time.monotonic()
                link.wait(link.config.train.poll_seconds)
                waited += time.monotonic() - started
                continue
            started = time.perf_counter()
            result = trainer.train_step()
            busy += time.perf_counter() - started
            unsaved += 1
            losses.append((result["policy_loss"], result["value_loss"]))
            lr = result["lr"]
            if trainer.step % link.config.train.snapshot_every == 0:
                publish()
        if unsaved:  # a graceful stop keeps the steps since the last snapshot
            publish()
    finally:
        source.close()


# -- duels ---------------------------------------------------------------------


def duel(link: Link, db, seed: int) -> None:
    from hexzd.evaluation.duel import play_duel

    judged: set[int] = set()  # models whose results are sent, perhaps not yet stored
    while not link.stopping:
        link.poll()
        if link.paused:
            link.wait(1.0)
            continue
        if judge_against_perfect_play(link, db, judged):
            continue  # a few seconds per promotion, so it goes before the duels
        with store.read_only(db) as connection:
            pending = connection.execute(
                "SELECT id FROM duels WHERE result IS NULL ORDER BY kind = 'promotion' DESC, id LIMIT 1").fetchone()
        if pending is None:
            link.wait(5.0)  # a `duel` update (like any update) wakes it at once
            continue
        play_duel(link, db, pending[0], seed)


@functools.cache
def _solver(n: int):
    """One solver per board size for the worker's life: every model meets the same
    positions, so its table answers most of the next model's questions."""
    from hexzd.evaluation.perfect import Solver

    return Solver(n)


def judge_against_perfect_play(link: Link, db, judged: set[int]) -> bool:
    """Measures the newest promoted model not yet judged against perfect play; False if none.

    Only on boards the solver takes (hexzd/perfect.py) and without swap. The
    same positions (seed 0) for every model, at 0 simulations (the raw
    policy) and at the duels' simulations, so the rows of one run form a curve.
    """
    from hexzd.evaluation.perfect import MAX_SIZE, measure

    c = link.config
    if c.ratings.perfect_positions == 0 or c.game.board_size > MAX_SIZE or c.game.swap:
        return False
    with store.read_only(db) as connection:
        rows = connection.execute(
            "SELECT p.model_id FROM promotions p JOIN models m ON m.id = p.model_id"
            " WHERE m.weights IS NOT NULL AND p.model_id NOT IN (SELECT model_id FROM perfect_play)"
            " ORDER BY p.at DESC").fetchall()
    model_id = next((r[0] for r in rows if r[0] not in judged), None)
    if model_id is None:
        return False
    judged.add(model_id)

    def stopping() -> bool:  # polled once a ply, so that a stop or a dead daemon ends it at once
        link.poll()
        return link.stopping

    evaluator = load_evaluator(db, model_id, c)
    report = measure(c.game.board_size, evaluator.evaluate, sims=sorted({0, c.duel.sims}),
                     positions=c.ratings.perfect_positions, seed=0, config=c.selfplay,
                     solver=_solver(c.game.board_size), should_stop=stopping)
    if report is None:
        return True
    sign = report.value_sign.rate if report.value_sign else None
    for a in report.agents:
        link.send(m.PerfectPlay(model_id=model_id, sims=a.sims, seed=report.seed, positions=report.positions,
                                won=report.won, kept=a.perfect_moves.hits, converted=a.conversion.hits,
                                value_sign=sign))
    line = ", ".join(f"{a.perfect_moves.rate:.1%} at {a.sims} sims" for a in report.agents)
    link.event("info", f"model {model_id} against perfect play: keeps the win in {line} "
                       f"of {report.won} won positions")
    return True


KINDS = {"selfplay": selfplay, "trainer": trainer, "duel": duel}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hexzd.daemon.workers")
    parser.add_argument("kind", choices=sorted(KINDS))
    parser.add_argument("--db", required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format=f"%(asctime)s {args.name} %(levelname)s %(message)s")
    link = Link(RunDir.of(args.db), args.name)
    try:
        work = KINDS[args.kind]
        if args.kind == "trainer":
            work(link, args.db)
        else:
            work(link, args.db, args.seed)
    except Exception as e:
        log.exception("worker failed")
        link.event("error", f"{type(e).__name__}: {e}")
        return 1
    finally:
        link.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
