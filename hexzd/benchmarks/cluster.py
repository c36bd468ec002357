"""`hexzd bench cluster`: self-play through Ray actors against local processes, and the daemon's ingest.

Three figures, on this machine:

- self-play, `ray` against `local`, on the same cores: one self-play actor a
  core (hexzd.daemon.actors.SelfPlayActor, the same code the cluster's nodes
  run, with the same network of the board's default shape), each playing
  `[cluster] batch_seconds` at a time and handing its finished games back.
  `local`: each in a process of its own, its games back over a pipe, as this
  machine's self-play workers push theirs. `ray`: each a Ray actor of one CPU
  on a Ray instance started for the run, the weights sent by one `ray.put`,
  the games taken with `ray.wait`, as the cluster worker does, at the local
  processes' niceness (Ray's own default is 15). Games/s are
  counted as the games reach this process. Both pools start and warm up
  (compiled kernels, loaded network), then take turns: ROUNDS rounds of each,
  `seconds` / ROUNDS long, every worker starting its first call of a round at
  once, the idle pool waiting (a shared machine's speed drifts from one
  minute to the next, so each side is measured beside the other). Games
  arrive a call at a time, so a call lasts `[cluster] batch_seconds` or a
  CALLS-th of a round, whichever is shorter. `ratio` = the median round's
  ray / local; the target is 0.9 or more.
- ingest: a real daemon (`hexzd start --headless`, paused, so its own workers
  add nothing) takes INGEST_GAMES synthetic games, random games of the board
  with sparse visit distributions of real size, pushed to its results socket
  as the cluster worker pushes them; games/s from the first push to the
  commit of the last (its `games` counter). At 9x9 and 19x19.
- nodes: how many 8-GPU H100 nodes that daemon serves before its ingest is
  the bottleneck, from the ingest games/s and the games/s an H100 makes:
  its dense bf16 peak (hexzd.benchmarks.net.GPU_PEAKS) at H100_UTILISATION,
  over the evaluations a game takes (simulations a move times its moves) with
  the board's default network. An estimate from a datasheet, said as such.
"""

import multiprocessing
import multiprocessing.connection
import os
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from hexzd import processes
from hexzd.benchmarks.net import GPU_PEAKS
from hexzd.config import Config, default_toml, scaled_shape
from hexzd.daemon import messages as m
from hexzd.daemon.actors import SelfPlayActor, environment
from hexzd.daemon.control import DaemonError, ask
from hexzd.daemon.rundir import RunDir
from hexzd.game.records import encode_policy
from hexzd.game.rules import Games
from hexzd.nn.net import NetSpec, count_flops, count_params
from hexzd.nn.snapshot import Snapshot

__all__ = ["run", "report"]

WARM_SECONDS = 1.0  # each actor's first call: kernels compiled, network loaded
ROUNDS = 3  # rounds of each kind, local and Ray in turn: a shared machine's speed drifts
CALLS = 10  # play calls of a worker in a round at least: games arrive a call at a time
INGEST_SIZES = (9, 19)
INGEST_GAMES = 2000
H100_UTILISATION = 0.3  # the share of the bf16 peak a small residual network's inference keeps, assumed
GPUS_PER_NODE = 8
VISITED = 16  # cells with visits in a synthetic move's distribution (Gumbel's default actions)


def run(size: int = 9, seconds: float = 3.0, **_) -> dict:
    import ray  # noqa: F401  the cluster extra: said before any measurement, not after the first

    cores = len(os.sched_getaffinity(0))
    config = Config.model_validate({"game": {"board_size": size}}).model_dump()
    selfplay = _selfplay(cores, config, _network(size), seconds)
    ingest = {n: _ingest(n) for n in INGEST_SIZES}
    return {
        "unit": "games/s",
        "size": size,
        "cores": cores,
        "hexzd_per_s": selfplay["ray_games_per_s"],
        "baseline_per_s": selfplay["local_games_per_s"],
        "ratio": selfplay["ratio"],
        "selfplay": selfplay,
        "ingest": ingest,
        "nodes": {n: _nodes(n, ingest[n]["games_per_s"], config) for n in INGEST_SIZES},
    }


def _network(n: int) -> bytes:
    """An untrained network of the board's default shape, as snapshot bytes."""
    model = NetSpec(n, **scaled_shape(n)).build()
    return Snapshot(model.spec, model.state_dict(), count_params(model), count_flops(model)).to_bytes()


# -- self-play: local processes and Ray actors ---------------------------------------------


def _play_locally(name: str, config: dict, weights: bytes, seed: int, pipe) -> None:
    """One local self-play process: a call of self-play for each number of seconds it is sent,
    the call's games sent back; None ends it."""
    actor = SelfPlayActor(name, "local", config, seed)
    actor.set_weights(1, weights)
    while (seconds := pipe.recv()) is not None:
        pipe.send(actor.play(config, seconds)["games"])


class LocalPool:
    """`workers` local self-play processes, called as Ray actors are: one call at a time each."""

    def __init__(self, workers: int, config: dict, weights: bytes):
        context = multiprocessing.get_context("spawn")
        os.environ.update(environment(Config.model_validate(config), {"num_cpus": 1}))  # as the Ray actors get
        self.pipes, self.children = [], []
        for k in range(workers):
            ours, theirs = context.Pipe()
            child = context.Process(target=_play_locally, args=(f"local-{k}", config, weights, k, theirs))
            child.start()
            self.pipes.append(ours)
            self.children.append(child)

    def call(self, worker: int, seconds: float) -> int:
        self.pipes[worker].send(seconds)
        return worker

    def ended(self, calls: list[int]) -> list[tuple[int, list]]:
        """The calls (of those given) that ended within a moment, each with its games."""
        ready = multiprocessing.connection.wait([self.pipes[w] for w in calls], timeout=0.1)
        return [(self.pipes.index(pipe), pipe.recv()) for pipe in ready]

    def close(self) -> None:
        for pipe, child in zip(self.pipes, self.children):
            pipe.send(None)
            child.join(10)


class RayPool:
    """`workers` Ray actors of one CPU each on a Ray instance of this machine's cores; the weights
    sent by one ray.put, as the cluster worker sends them."""

    def __init__(self, workers: int, config: dict, weights: bytes):
        import ray

        self.ray = ray
        # Ray starts its workers at niceness 15, and on a busy machine they would lose the cores to
        # anything else running: the same priority as the local processes, for the comparison.
        os.environ["RAY_worker_niceness"] = "0"  # noqa: SIM112  Ray spells it so
        ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False, configure_logging=False)
        resources = {"num_cpus": 1}
        env = {"env_vars": environment(Config.model_validate(config), resources)}
        remote = ray.remote(SelfPlayActor).options(**resources, runtime_env=env)
        self.config = config
        self.actors = [remote.remote(f"ray-{k}", "local", config, k) for k in range(workers)]
        ref = ray.put(weights)  # once: every actor gets the ObjectRef
        ray.get([a.set_weights.remote(1, ref) for a in self.actors])

    def call(self, worker: int, seconds: float):
        return self.actors[worker].play.remote(self.config, seconds)

    def ended(self, calls: list) -> list[tuple[object, list]]:
        """The calls (of those given) that ended within a moment, each with its games."""
        ready, _ = self.ray.wait(calls, num_returns=len(calls), timeout=0.1)
        return [(ref, self.ray.get(ref)["games"]) for ref in ready]

    def close(self) -> None:
        self.ray.shutdown()


def _round(pool, workers: int, batch: float, seconds: float) -> int:
    """Games that reach this process within `seconds`, every worker calling again as its call ends;
    the calls still in flight at the end are waited for (and not counted), so the pool is idle after."""
    calls = [pool.call(w, batch) for w in range(workers)]
    start, games = time.monotonic(), 0
    while any(call is not None for call in calls):
        for call, got in pool.ended([call for call in calls if call is not None]):
            worker = calls.index(call)
            within = time.monotonic() - start < seconds
            games += len(got) if within else 0
            calls[worker] = pool.call(worker, batch) if within else None
    return games


def _selfplay(workers: int, config: dict, weights: bytes, seconds: float) -> dict:
    """Local and Ray rounds in turn (ROUNDS each, `seconds` / ROUNDS long), both pools warm throughout."""
    span = seconds / ROUNDS
    batch = min(config["cluster"]["batch_seconds"], span / CALLS)  # many calls a round, as the cluster's
    pools = {"local": LocalPool(workers, config, weights)}
    try:
        pools["ray"] = RayPool(workers, config, weights)
        for pool in pools.values():
            _round(pool, workers, WARM_SECONDS, 0.0)  # compiled kernels, the network loaded
        rounds: dict[str, list[float]] = {"local": [], "ray": []}
        for _ in range(ROUNDS):
            for name, pool in pools.items():
                rounds[name].append(_round(pool, workers, batch, span) / span)
    finally:
        for pool in pools.values():
            pool.close()
    ratios = sorted(r / max(lo, 1e-9) for r, lo in zip(rounds["ray"], rounds["local"]))
    return {
        "workers": workers,
        "call_seconds": batch,
        "rounds": rounds,
        "local_games_per_s": float(np.median(rounds["local"])),
        "ray_games_per_s": float(np.median(rounds["ray"])),
        "ratio": ratios[len(ratios) // 2],
    }


# -- the daemon's ingest -------------------------------------------------------------------


def _synthetic_games(n: int, count: int, seed: int = 0) -> list[bytes]:
    """`count` random n x n games as Game frames, each move's distribution on VISITED cells."""
    rng = np.random.default_rng(seed)
    frames = []
    while len(frames) < count:
        games = Games.new(64, n)
        actions, policies = [[] for _ in range(64)], [[] for _ in range(64)]
        while not games.done.all():
            legal = games.legal()[:, : n * n] & ~games.done[:, None]
            scores = np.where(legal, rng.random(legal.shape), -1.0)
            moves = np.where(games.done, -1, scores.argmax(1))
            for b in np.flatnonzero(moves >= 0):
                policy = np.zeros(n * n + 1, np.float32)
                visited = np.argsort(scores[b])[-VISITED:]
                policy[visited] = rng.dirichlet(np.ones(len(visited)))
                actions[b].append(int(moves[b]))
                policies[b].append(policy)
            games.play(moves)
        for b in range(64):
            frames.append(_frame(n, actions[b], np.array(policies[b]), int(games.winner[b]), len(frames)))
    return frames[:count]


def _frame(n: int, actions: list[int], policies: np.ndarray, winner: int, k: int) -> bytes:
    from hexzd.game.notation import to_trmph

    game = m.Game(
        worker="bench",
        model_id=None,
        board_size=n,
        sims=32,
        moves=to_trmph(actions, n),
        winner=winner,
        length=len(actions),
        policy=encode_policy(policies),
        evals=0,
        seconds=0.0,
        node="bench",
        uid=f"bench:{k}",
    )
    return m.encode(game)


def _ingest(n: int) -> dict:
    """A paused daemon on an n x n board takes INGEST_GAMES pushed games: games/s to their commit."""
    import zmq

    frames = _synthetic_games(n, INGEST_GAMES)
    where = Path(tempfile.mkdtemp(prefix="hexzd-ingest-"))
    (where / "config.toml").write_text(re.sub(r"(?m)^board_size = 5", f"board_size = {n}", default_toml()))
    db = where / "run.sqlite"
    command = [sys.executable, "-m", "hexzd", "start", "--headless", "--db", str(db)]
    command += ["--config", str(where / "config.toml")]
    with open(where / "daemon.out", "ab") as out:
        daemon = processes.start(command, stdout=out, stderr=out, cwd=where)
    try:
        _wait(lambda: _status(db, "pause"), daemon, where)
        time.sleep(3.0)  # the games its workers had in flight land first
        before = _status(db, "status")["counters"]["games"]
        context = zmq.Context()
        push = context.socket(zmq.PUSH)
        push.connect(RunDir.of(db).results)
        start = time.monotonic()
        for frame in frames:
            push.send(frame)
        _wait(lambda: _status(db, "status")["counters"]["games"] - before >= len(frames), daemon, where, poll=0.02)
        elapsed = time.monotonic() - start
        push.close(0)
        context.term()
    finally:
        processes.stop(daemon, 30)
    size = sum(len(f) for f in frames) / len(frames)
    return {"games": len(frames), "seconds": elapsed, "games_per_s": len(frames) / elapsed, "bytes_per_game": size}


def _status(db: Path, command: str) -> dict | None:
    try:
        return ask(db, command, timeout=2.0)
    except (DaemonError, OSError):
        return None


def _wait(condition, daemon, where: Path, poll: float = 0.2, limit: float = 120.0) -> None:
    deadline = time.monotonic() + limit
    while not condition():
        if daemon.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the daemon in {where} did not answer: see {where / 'daemon.out'}")
        time.sleep(poll)


def _nodes(n: int, ingest_per_s: float, config: dict) -> dict:
    """8-GPU H100 nodes one daemon serves at n x n, by the estimate in the module's doc."""
    model = NetSpec(n, **scaled_shape(n)).build()
    peak = dict(GPU_PEAKS)["H100"]["bf16"]
    evals_per_s = peak * H100_UTILISATION / count_flops(model)
    sims, moves = config["selfplay"]["sims"], 0.6 * n * n  # a self-play game fills about 60% of the board
    games_per_gpu = evals_per_s / (sims * moves)
    return {
        "evals_per_s_per_gpu": evals_per_s,
        "games_per_s_per_gpu": games_per_gpu,
        "nodes": ingest_per_s / (GPUS_PER_NODE * games_per_gpu),
    }


def report(result: dict) -> None:
    sp = result["selfplay"]
    print(f"self-play {result['size']}x{result['size']}, {result['cores']} cores, one worker a core, {ROUNDS} rounds:")
    print(f"  local processes {sp['local_games_per_s']:8.1f} games/s  (rounds: {_rounds(sp['rounds']['local'])})")
    print(f"  Ray actors      {sp['ray_games_per_s']:8.1f} games/s  (rounds: {_rounds(sp['rounds']['ray'])})")
    print(f"  Ray / local     {result['ratio']:8.2f}  (the median round's; the target: 0.90 or more)")
    print("the daemon's ingest (validated and committed), and the 8 x H100 nodes it serves:")
    for n, i in result["ingest"].items():
        est = result["nodes"][n]
        print(
            f"  {n}x{n}: {i['games_per_s']:8.0f} games/s ({i['bytes_per_game'] / 1024:.1f} KiB a game);"
            f" an H100 ~{est['games_per_s_per_gpu']:.0f} games/s at {H100_UTILISATION:.0%} of its bf16 peak:"
            f" ~{est['nodes']:.1f} nodes"
        )


def _rounds(rates: list[float]) -> str:
    return ", ".join(f"{r:.1f}" for r in rates)
