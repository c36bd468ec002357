"""`hexzd bench cluster`: self-play through Ray actors against local processes, and the daemon's ingest.

Three figures, on this machine:

- self-play, `ray` against `local`, on the same cores: one self-play actor a
  core (hexzd.daemon.actors.SelfPlayActor, the same code the cluster's nodes
  run, with the same network of the board's default shape), each playing
  `[cluster] batch_seconds` at a time and handing its finished games back.
  `local`: each in a process of its own, its games back over a pipe, as this
  machine's self-play workers push theirs. `ray`: each a Ray actor of one CPU
  on a Ray instance started for the run, the weights sent by one `ray.put`,
  the games taken with `ray.wait`, as the cluster worker does. Games/s are
  counted as the games reach this process, over `seconds` after a warm-up
  call each (compiled kernels, loaded network), every worker starting its
  first timed call at once. Games arrive a call at a time, so `seconds` should
  be many calls long (60 s: 2% off at most). `ratio` = ray / local; the
  target is 0.9 or more.
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
INGEST_SIZES = (9, 19)
INGEST_GAMES = 2000
H100_UTILISATION = 0.3  # the share of the bf16 peak a small residual network's inference keeps, assumed
GPUS_PER_NODE = 8
VISITED = 16  # cells with visits in a synthetic move's distribution (Gumbel's default actions)


def run(size: int = 9, seconds: float = 3.0, **_) -> dict:
    import ray  # noqa: F401  the cluster extra: said before any measurement, not after the first

    cores = len(os.sched_getaffinity(0))
    config = Config.model_validate({"game": {"board_size": size}}).model_dump()
    weights = _network(size)
    local = _local(cores, config, weights, seconds)
    ray_rate = _ray(cores, config, weights, seconds)
    ingest = {n: _ingest(n) for n in INGEST_SIZES}
    return {
        "unit": "games/s",
        "size": size,
        "cores": cores,
        "hexzd_per_s": ray_rate["games_per_s"],
        "baseline_per_s": local["games_per_s"],
        "ratio": ray_rate["games_per_s"] / max(local["games_per_s"], 1e-9),
        "local": local,
        "ray": ray_rate,
        "ingest": ingest,
        "nodes": {n: _nodes(n, ingest[n]["games_per_s"], config) for n in INGEST_SIZES},
    }


def _network(n: int) -> bytes:
    """An untrained network of the board's default shape, as snapshot bytes."""
    model = NetSpec(n, **scaled_shape(n)).build()
    return Snapshot(model.spec, model.state_dict(), count_params(model), count_flops(model)).to_bytes()


# -- self-play: local processes and Ray actors ---------------------------------------------


def _play_locally(name: str, config: dict, weights: bytes, seconds: float, seed: int, pipe) -> None:
    """One local self-play process: a warm-up call, then call after call, each call's games sent back."""
    actor = SelfPlayActor(name, "local", config, seed)
    actor.set_weights(1, weights)
    actor.play(config, WARM_SECONDS)
    pipe.send([])
    pipe.recv()  # every process is warm: the measurement starts for all at once, as the Ray actors' calls do
    while True:  # until the measurement ends it
        pipe.send(actor.play(config, seconds)["games"])


def _local(workers: int, config: dict, weights: bytes, seconds: float) -> dict:
    context = multiprocessing.get_context("spawn")
    batch = config["cluster"]["batch_seconds"]
    pipes, children = [], []
    os.environ.update(environment(Config.model_validate(config), {"num_cpus": 1}))  # as the Ray actors get
    for k in range(workers):
        ours, theirs = context.Pipe()
        child = context.Process(target=_play_locally, args=(f"local-{k}", config, weights, batch, k, theirs))
        child.start()
        pipes.append(ours)
        children.append(child)
    for pipe in pipes:
        pipe.recv()  # warm
    for pipe in pipes:
        pipe.send("go")
    start, games = time.monotonic(), 0
    while time.monotonic() - start < seconds:
        for pipe in multiprocessing.connection.wait(pipes, timeout=0.1):
            got = pipe.recv()
            if time.monotonic() - start < seconds:
                games += len(got)
    elapsed = time.monotonic() - start
    for child in children:
        child.terminate()
        child.join()
    return {"workers": workers, "games": games, "seconds": elapsed, "games_per_s": games / elapsed}


def _ray(workers: int, config: dict, weights: bytes, seconds: float) -> dict:
    import ray

    ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        batch = config["cluster"]["batch_seconds"]
        resources = {"num_cpus": 1}
        env = {"env_vars": environment(Config.model_validate(config), resources)}
        remote = ray.remote(SelfPlayActor).options(**resources, runtime_env=env)
        actors = [remote.remote(f"ray-{k}", "local", config, k) for k in range(workers)]
        ref = ray.put(weights)  # once: every actor gets the ObjectRef
        ray.get([a.set_weights.remote(1, ref) for a in actors])
        ray.get([a.play.remote(config, WARM_SECONDS) for a in actors])
        calls = {a.play.remote(config, batch): a for a in actors}
        start, games = time.monotonic(), 0
        while time.monotonic() - start < seconds:
            ready, _ = ray.wait(list(calls), num_returns=len(calls), timeout=0.1)
            for done in ready:
                actor = calls.pop(done)
                got = ray.get(done)["games"]
                if time.monotonic() - start < seconds:
                    games += len(got)
                calls[actor.play.remote(config, batch)] = actor
        elapsed = time.monotonic() - start
    finally:
        ray.shutdown()
    return {"workers": workers, "games": games, "seconds": elapsed, "games_per_s": games / elapsed}


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
    r, lo = result["ray"], result["local"]
    print(f"self-play {result['size']}x{result['size']}, {result['cores']} cores, one actor a core:")
    print(f"  local processes {lo['games_per_s']:8.1f} games/s ({lo['games']} games in {lo['seconds']:.1f} s)")
    print(f"  Ray actors      {r['games_per_s']:8.1f} games/s ({r['games']} games in {r['seconds']:.1f} s)")
    print(f"  Ray / local     {result['ratio']:8.2f}  (the target: 0.90 or more)")
    print("the daemon's ingest (validated and committed), and the 8 x H100 nodes it serves:")
    for n, i in result["ingest"].items():
        est = result["nodes"][n]
        print(
            f"  {n}x{n}: {i['games_per_s']:8.0f} games/s ({i['bytes_per_game'] / 1024:.1f} KiB a game);"
            f" an H100 ~{est['games_per_s_per_gpu']:.0f} games/s at {H100_UTILISATION:.0%} of its bf16 peak:"
            f" ~{est['nodes']:.1f} nodes"
        )
