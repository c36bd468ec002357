"""Worker processes: self-play, trainer, duel and cluster, each its own process.

The daemon starts each as `python -m hexzd.daemon.workers KIND --db FILE --name NAME --daemon-pid PID`,
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
import logging
import os
import sys
import time
from dataclasses import replace

import zmq

from hexzd import store
from hexzd.config import Config
from hexzd.daemon import messages as m
from hexzd.daemon.rundir import CONTROL_LIMIT, Follow, RunDir, limit
from hexzd.evaluation.throttle import Throttle, ratings_due
from hexzd.game.notation import to_trmph

log = logging.getLogger("hexzd.worker")

BEST_REFRESH = 5.0  # seconds between reads of the best model from the state file
DUEL_POLL = 1.0  # seconds between looks at the duels table for a new duel
ENDED_POLL = 0.05  # ...and while the daemon has not yet stored the end of the last one (rating matches last ~0.1 s)
PROMOTION_LOOK = 0.5  # seconds between a measurement's looks for a promotion duel waiting behind it
CPU_REPORT = 1.0  # seconds between a worker's reports of its running totals: CPU time, evaluations (the tuner's rates)
FOLLOW_EVERY = 1.0  # seconds between looks whether the log was rotated away (hexzd.daemon.rundir.Follow)
LIVE_EVERY = 1.0  # seconds between a self-play worker's views of its game in progress (the dashboard's board)


def worker_config(data: dict) -> Config:
    """The config in force, as a worker takes it from the run directory's config.json or a
    ConfigUpdate: validated again, by the rules the daemon's edits passed (each edit the
    daemon accepts, a worker takes: tests/daemon/test_config_handoff.py)."""
    return Config.model_validate(data)


class Link:
    """A worker's two sockets and the state that the daemon's updates set."""

    def __init__(self, run: RunDir, db, name: str, daemon_pid: int | None = None):
        # The daemon's pid, given on the command line: a worker that starts
        # after its daemon died must not take its new parent for the daemon.
        self.name, self.parent, self.db = name, daemon_pid or os.getppid(), db
        self.context = zmq.Context()
        self.push = self.context.socket(zmq.PUSH)
        self.push.setsockopt(zmq.LINGER, 10_000)  # flush results on exit, up to 10 s
        self.push.setsockopt(zmq.SNDTIMEO, 1000)  # a full queue: look whether the daemon is still there
        self.push.connect(run.results)
        self.sub = self.context.socket(zmq.SUB)
        self.sub.setsockopt(zmq.SUBSCRIBE, b"")
        limit(self.sub, CONTROL_LIMIT)  # the daemon's updates: a config at most
        self.sub.connect(run.updates)
        self.config = worker_config(run.read_config())
        self.paused = self.stopping = False
        # The state file is the truth about the best model; `Best` updates only
        # bring news sooner. A subscription takes a moment to reach the daemon,
        # and a `Best` published meanwhile is lost, so the file is read again
        # every BEST_REFRESH seconds.
        self.best: int | None = None
        self.best_read = float("-inf")
        self.read_best()
        self.cpu_sent = float("-inf")
        self.totals = dict  # more running totals for the CPU report: self-play's inference service sets them
        self.follow, self.followed = Follow(run.log(name)), time.monotonic()  # the log, after a rotation
        self.send(m.Hello(worker=name, pid=os.getpid()))

    def read_best(self) -> None:
        with store.read_only(self.db) as connection:
            best = store.best_model(connection)
        self.best_read = time.monotonic()
        if best is not None:  # the daemon publishes `Best` after its commit: the file is never behind it
            self.best = best

    def send(self, message: m.Message) -> None:
        """Pushes a result, waiting while the daemon's queue is full; drops it if the daemon is gone."""
        frame = m.encode(message)
        while not self.orphaned():
            try:
                self.push.send(frame)
                return
            except zmq.Again:  # backpressure: the daemon is busy (or dead, which the loop checks)
                continue

    def orphaned(self) -> bool:
        """True once the daemon is gone (the worker's parent changed): then it stops."""
        gone = os.getppid() != self.parent
        if gone:
            self.stopping = True
        return gone

    def event(self, level: str, message: str) -> None:
        self.send(m.Event(level=level, source=self.name, message=message))

    def poll(self, timeout: float = 0.0) -> bool:
        """Applies the updates that arrive within `timeout` seconds; True if any did."""
        got = False
        if self.orphaned():  # the daemon died: do not outlive it
            return True
        if time.monotonic() - self.best_read > BEST_REFRESH:
            self.read_best()
        if time.monotonic() - self.followed > FOLLOW_EVERY:
            self.followed = time.monotonic()
            self.follow()
        if time.monotonic() - self.cpu_sent > CPU_REPORT:  # the daemon turns these into CPU shares
            self.cpu_sent = time.monotonic()
            self.send(m.Metrics(source=self.name, values={"cpu_seconds": time.process_time(), **self.totals()}))
        while self.sub.poll(int(timeout * 1000) if not got else 0):
            try:
                update = m.decode(self.sub.recv())
            except m.BadMessage as e:
                log.warning("dropped an update: %s", e)
                continue
            if isinstance(update, m.Pause) and update.paused == self.paused:
                continue  # the daemon says it every half second: news only when it changes
            got = True
            if isinstance(update, m.Stop):
                self.stopping = True
            elif isinstance(update, m.Pause):
                self.paused = update.paused
            elif isinstance(update, m.Best):
                self.best = update.model_id
            elif isinstance(update, m.ConfigUpdate):
                self.config = worker_config(update.config)
        return got

    def wait(self, seconds: float) -> None:
        """Sleeps up to `seconds`, waking early for any update."""
        deadline = time.monotonic() + seconds
        while not self.stopping and time.monotonic() < deadline:
            if self.poll(min(0.25, max(0.0, deadline - time.monotonic()))):
                return

    def close(self) -> None:
        self.sub.close(0)
        self.push.close(0 if self.orphaned() else None)  # nobody will take what is queued
        self.context.term()


# -- self-play -----------------------------------------------------------------


def selfplay(link: Link, db, seed: int) -> None:
    from hexzd.nn.loader import load  # each kind imports what it needs: torch only once a network exists
    from hexzd.train.selfplay import SelfPlay

    c = link.config
    games = SelfPlay(c.selfplay, c.game.board_size, c.game.swap, seed=seed)
    # What the tuner judges by: evaluations as the inference service runs them (not as
    # games end), and whether games of an older batch shape are still playing out.
    link.totals = lambda: {"evals_served": games.served, "settling": float(games.settling)}
    shown = float("-inf")
    try:
        while not link.stopping:
            link.poll()
            if link.paused:
                link.wait(1.0)
                continue
            finished, loaded = play_move(games, link.config, link.best, lambda best: load(db, best, link.config.device))
            if loaded is not None:
                link.event("info", f"self-play now uses model {link.best} ({loaded})")
            for record, evals, seconds in finished:
                link.send(game_message(link.name, record, evals, seconds))
            if time.monotonic() - shown > LIVE_EVERY and (live := _live(link.name, games)) is not None:
                link.send(live)
                shown = time.monotonic()
    finally:
        games.close()


def play_move(games, config: Config, best: int | None, load) -> tuple[list, str | None]:
    """One move of every game of `games` (a hexzd.train.selfplay.SelfPlay), under the config and
    best model in force: the step of this machine's self-play workers and of the cluster's actors
    (hexzd.daemon.actors) alike. load(model_id) -> Network. Returns the games that ended, as
    (record, evals, seconds), and why the new best's backend was chosen when it was just loaded."""
    if config.selfplay != games.config:
        games.apply(config.selfplay)
    loaded = None
    if best is not None and (games.network is None or games.network.model_id != best):
        games.network = load(best)
        loaded = games.network.reason
    return games.move(), loaded


def game_message(worker: str, record, evals: int, seconds: float, node=None, uid=None) -> m.Game:
    """A finished game (a hexzd.game.records.GameRecord) as the daemon stores it."""
    return m.Game(
        worker=worker,
        model_id=record.model_id,
        board_size=record.board_size,
        sims=record.sims,
        moves=record.moves,
        winner=record.winner,
        length=len(record.actions),
        policy=record.policy,
        evals=evals,
        seconds=seconds,
        node=node,
        uid=uid,
    )


def _live(worker: str, games) -> m.Live | None:
    """The worker's first game in flight, as the dashboard draws it."""
    if (watched := games.watched()) is None:
        return None
    moves, visits, chosen = watched
    n, network = games.n, games.network
    return m.Live(
        worker=worker,
        board_size=n,
        moves=to_trmph(moves, n),
        visits=visits[: n * n].astype("<f4").tobytes(),
        chosen=chosen,
        model_id=network.model_id if network else None,
        sims=games.config.sims,
        backend=network.backend if network else "random rollouts",
    )


# -- trainer -------------------------------------------------------------------


def trainer(link: Link, db, seed: int) -> None:
    from hexzd.nn.snapshot import Snapshot
    from hexzd.train.sources import SqliteGames
    from hexzd.train.trainer import Trainer

    with store.read_only(db) as connection:
        row = store.latest_checkpoint(connection)
    resume = Snapshot.from_bytes(row[1]) if row else None
    source = SqliteGames(db)
    trainer = Trainer(link.config, source, resume)
    if resume:
        link.event("info", f"trainer resumed from model {row[0]} at step {resume.step}")

    def publish(snapshot: Snapshot, seconds: float) -> None:
        players = replace(snapshot, optimizer=None, rng={})
        link.send(
            m.SnapshotMade(
                train_step=snapshot.step,
                positions_seen=snapshot.positions_seen,
                samples_trained=snapshot.samples_trained,
                params=snapshot.params,
                flops_per_eval=snapshot.flops_per_eval,
                train_flops=float(snapshot.train_flops),
                train_seconds=seconds,
                weights=players.to_bytes(),
                checkpoint=snapshot.to_bytes(),
            )
        )

    def should_stop() -> bool:
        link.poll()
        return link.stopping

    try:
        trainer.run(
            should_stop,
            wait=link.wait,
            on_snapshot=publish,
            on_metrics=lambda values: link.send(m.Metrics(source=link.name, values=values)),
            config=lambda: link.config,
            paused=lambda: link.paused,
        )
    finally:
        source.close()


# -- duels ---------------------------------------------------------------------


def duel(link: Link, db, seed: int) -> None:
    """Plays the duels the daemon writes into the `duels` table (see DuelWorker)."""
    from hexzd.evaluation.matches import warm

    warm(link.config.game.board_size, link.config.game.swap)
    DuelWorker(link, db, seed).run()


class DuelWorker:
    """Plays the duels the daemon writes into the `duels` table.

    The table is the queue: the daemon inserts a row, this worker finds it
    within DUEL_POLL seconds, and a restarted worker resumes the same duel
    from its games in the state file. Measurements go first: a perfect-play
    check of each promoted model, then an open rating match. A promotion
    duel does not wait for their end but runs inside their poll (within
    PROMOTION_LOOK seconds, unless measurements are owed their share of the
    CPU, ratings.share), and the measurement then goes on with its games in
    flight, none abandoned.
    """

    def __init__(self, link: Link, db, seed: int):
        self.link, self.db, self.seed = link, db, seed
        self.judged: set[int] = set()  # models whose results are sent, perhaps not yet stored
        # Duels whose end is sent, perhaps not yet stored. Replaying one from the games stored
        # so far would play pairs past its end, and the daemon, reading the pairing's history
        # for the next duel before those land, would hand the same openings out again.
        self.ended: set[int] = set()
        self.throttle = Throttle()
        # CPU-seconds: the promotions played inside measurements (rating matches, perfect-play
        # checks), all told; the perfect-play checks' own (the state file has only the duels');
        # the measurement under way's start, and the promotions' total then. And when the
        # measurement last looked for a waiting promotion.
        self.inner = self.checks = self.start = self.inner_at_start = self.looked = 0.0

    def run(self) -> None:
        link = self.link
        while not link.stopping:
            link.poll()
            if link.paused:
                link.wait(1.0)
                continue
            self.measuring()
            checked = judge_against_perfect_play(link, self.db, self.judged, self.yield_to_promotion)
            self.checks += self.measured()
            if checked:
                continue  # 1 to 14 CPU-seconds per promotion on 5x5, so promotions go inside it
            with store.read_only(self.db) as connection:
                duel_id = store.next_duel(connection)
                kind = store.duel(connection, duel_id)[0] if duel_id is not None else None
            if duel_id is None or duel_id in self.ended:
                link.wait(DUEL_POLL if duel_id is None else ENDED_POLL)
                continue
            self.measuring()
            self.play(duel_id, self.yield_to_promotion if kind == "rating" else self.should_stop)

    @staticmethod
    def cpu() -> float:
        """This process's CPU time; an outside engine's counts too, once play_match has closed its process."""
        from hexzd.evaluation.engines import children_cpu_seconds

        return time.process_time() + children_cpu_seconds()

    def should_stop(self) -> bool:
        """Polled once a move, so that a stop or a dead daemon ends a duel at once."""
        self.link.poll()
        self.link.wait(self.throttle.wait(self.link.config.evaluation.cpu_share))
        return self.link.stopping

    def measuring(self) -> None:
        self.start, self.inner_at_start = self.cpu(), self.inner

    def measured(self) -> float:
        """The measurement under way's CPU-seconds so far, less the promotions inside it."""
        return self.cpu() - self.start - (self.inner - self.inner_at_start)

    def yield_to_promotion(self) -> bool:
        """A measurement's poll, where a waiting promotion duel is played unless
        measurements are owed CPU time (ratings.share): the perfect-play checks and the
        measurement under way count as rating matches."""
        link = self.link
        if self.should_stop() or time.monotonic() - self.looked < PROMOTION_LOOK:
            return link.stopping
        self.looked = time.monotonic()
        with store.read_only(self.db) as connection:
            promotion = store.next_duel(connection, promotions_only=True)
            if promotion is None or promotion in self.ended:
                return link.stopping
            finished = store.evaluation_seconds(connection)
        if not ratings_due(finished, link.config.ratings.share, self.checks + self.measured()):
            self.inner += self.play(promotion, self.should_stop)
        return link.stopping

    def play(self, duel_id: int, stop) -> float:
        """Plays duel `duel_id` to its end, which it sends, or until stop(); returns its CPU-seconds.

        CPU time, not wall: the throttle's waits cost nothing. A promotion played inside
        a rating match counts as its own, not the match's.
        """
        from hexzd.evaluation.matches import play_match

        link = self.link

        def on_game(pair, moves, winner, colour):
            link.send(m.MatchGame(duel_id=duel_id, pair=pair, moves=moves, winner=winner, candidate_colour=colour))

        link.send(m.MatchStart(duel_id=duel_id))  # the daemon blames a crash from here on this match
        started, inner = self.cpu(), self.inner
        end = play_match(self.db, duel_id, link.config, self.seed, on_game, stop, RunDir.of(self.db).path)
        own = self.cpu() - started - (self.inner - inner)
        if end is not None:
            self.ended.add(duel_id)
            link.send(m.MatchEnd(duel_id=duel_id, cpu_seconds=own, **end.model_dump()))
        return own


def judge_against_perfect_play(link: Link, db, judged: set[int], should_stop) -> bool:
    """Measures the newest promoted model not yet judged against perfect play; False if none.

    Only on boards the solver takes (hexzd/evaluation/perfect.py) and without swap. The
    same positions (seed 0) for every model, at 0 simulations (the raw
    policy) and at the duels' simulations, so the rows of one run form a curve.
    """
    from hexzd.evaluation.perfect import MAX_SIZE, measure, shared_solver
    from hexzd.nn.loader import load

    c = link.config
    if c.ratings.perfect_positions == 0 or c.game.board_size > MAX_SIZE or c.game.swap:
        return False
    with store.read_only(db) as connection:
        unjudged = store.unjudged_promotions(connection)
    model_id = next((m for m in unjudged if m not in judged), None)
    if model_id is None:
        return False
    judged.add(model_id)
    link.send(m.Checking(model_id=model_id))  # the daemon blames a crash from here on this check
    try:
        network = load(db, model_id, c.device)
        report = measure(
            c.game.board_size,
            network.evaluate,
            sims=sorted({0, c.duel.sims}),
            positions=c.ratings.perfect_positions,
            seed=0,
            config=c.selfplay,
            solver=shared_solver(c.game.board_size),
            should_stop=should_stop,
        )
    except Exception as e:  # a model that cannot be measured (its weights do not load) must not stop evaluation
        log.exception("model %s against perfect play failed", model_id)
        link.event("error", f"model {model_id} against perfect play: {type(e).__name__}: {e}; skipped")
        return True
    finally:
        link.send(m.Checking(model_id=model_id, done=True))
    if report is None:
        return True
    sign = report.value_sign.rate if report.value_sign else None
    for a in report.agents:
        link.send(
            m.PerfectPlay(
                model_id=model_id,
                sims=a.sims,
                seed=report.seed,
                positions=report.positions,
                won=report.won,
                kept=a.perfect_moves.hits,
                converted=a.conversion.hits,
                value_sign=sign,
            )
        )
    line = ", ".join(f"{a.perfect_moves.rate:.1%} at {a.sims} sims" for a in report.agents)
    link.event("info", f"model {model_id} against perfect play: keeps the win in {line} of {report.won} won positions")
    return True


# -- the cluster -----------------------------------------------------------------


def cluster(link: Link, db, seed: int) -> None:
    """Self-play on a Ray cluster's nodes, its games pushed here ([cluster] address)."""
    from hexzd.daemon.cluster import Driver  # Ray: imported by this worker alone

    Driver(link, db, seed).run()


KINDS = {"selfplay": selfplay, "trainer": trainer, "duel": duel, "cluster": cluster}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hexzd.daemon.workers")
    parser.add_argument("kind", choices=sorted(KINDS))
    parser.add_argument("--db", required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--daemon-pid", type=int, help="the daemon's pid; the worker exits once it is gone")
    parser.add_argument("--paused", action="store_true", help="start paused: the daemon was when it started it")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format=f"%(asctime)s {args.name} %(levelname)s %(message)s"
    )
    link = Link(RunDir.of(args.db), args.db, args.name, args.daemon_pid)
    link.paused = args.paused  # until the daemon says otherwise
    try:
        KINDS[args.kind](link, args.db, args.seed)
    except Exception as e:
        log.exception("worker failed")
        link.event("error", f"{type(e).__name__}: {e}")
        return 1
    finally:
        link.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
