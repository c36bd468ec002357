"""`hexzd bench selfplay`: whole self-play, search and inference and bookkeeping, per backend.

A row runs the real self-play loop (hexzd.train.selfplay: groups, search
threads, the inference service, finished-game records) with a network of a
given shape on one backend, and reports network evaluations/s (as the
service ran them), positions/s and games/s. Two baselines come from the
same run:

- synthetic: the same evaluator alone, `throughput` on sample inputs at the
  mean batch the service ran. Self-play's evaluations/s over this is the
  headline, `of_synthetic`: how much of what the network can do the whole
  loop delivers. Self-play and synthetic alternate in ROUNDS rounds, each
  ratio from neighbouring measurements; the row is the median round.
- zero-cost: the same loop with an evaluator that costs nothing (fixed,
  non-uniform priors and values), which is the most the CPU side can feed:
  simulations per CPU-second of the process, i.e. per core. It runs twice:
  the search alone (the evaluator called in the search thread) and through
  the inference service's thread, whose difference is the cost of the hop.
  Each is the median of ROUNDS alternating rounds: a shared VM's speed
  drifts by 10% from one minute to the next.

Two more measurements say how far one process can feed an accelerator, and
why the service is a thread in it (hexzd.nn.inference_service) and not a process of its
own:

- threads: the zero-cost search alone with one search thread, then with a
  thread per core (two groups each), and the share of one thread's time
  spent outside the GIL-free kernels. By Amdahl's law that share bounds the
  cores one self-play process can use: above it, a machine runs several
  self-play processes per GPU (`selfplay.workers`).
- hop: a request's round trip to the network through the service's thread,
  against one to a server process over ZeroMQ and shared memory
  (hexzd.benchmarks.hop).

It also states the host memory each game in flight takes (trees, games,
buffers and move records) after a few moves at 64 and at 800 simulations.
"""

import os
import time

import numba
import numpy as np
import torch

from hexzd.benchmarks.hop import ROWS, hops
from hexzd.benchmarks.net import backend_device
from hexzd.config import DeviceConfig, SelfplayConfig
from hexzd.nn.backends.base import sample_codes
from hexzd.nn.inference import available, build, throughput
from hexzd.nn.inference_service import MAX_BATCH
from hexzd.nn.loader import IN_FLIGHT, Network
from hexzd.nn.net import NetSpec
from hexzd.search import mcts
from hexzd.train.selfplay import SelfPlay

__all__ = ["SHAPES", "run", "report"]

SHAPES = ((4, 32), (2, 64))  # (blocks, channels): the default network and a wider, shallower one
SIMS = 64
BATCH = 256  # games in flight per worker: two groups of half
WARM_MOVES = 3  # moves before timing: compiled kernels, grown trees, captured graphs
MEMORY_SIMS = (64, 800)
MEMORY_GAMES = 32
MEMORY_MOVES = 8
ROUNDS = 3  # zero-cost rounds of each kind, alternating


class ZeroCost:
    """An evaluator that costs nothing: fixed non-uniform priors and values, whatever the input.

    inline: the inference service calls it in the search thread (see hexzd.nn.inference_service).
    """

    backend, precision, device = "zero-cost", "-", "cpu"

    def __init__(self, n: int, rows: int = MAX_BATCH, seed: int = 0, inline: bool = True):
        self.inline = inline
        rng = np.random.default_rng(seed)
        self.logits = rng.normal(0.0, 1.5, (rows, n * n)).astype(np.float32)  # a network's spread of priors
        self.values = rng.uniform(-0.5, 0.5, rows).astype(np.float32)

    def evaluate(self, codes):
        return self.logits[: len(codes)], self.values[: len(codes)]


def _selfplay(n: int, sims: int, batch: int, evaluators: list, threads: int = 1) -> SelfPlay:
    """Self-play of groups of batch/2 games, two a search thread, with these evaluators."""
    config = SelfplayConfig(sims=sims, batch=max(1, batch // 2), groups=2 * threads, threads=threads)
    games = SelfPlay(config, n, swap=False, seed=0)
    games.network = Network(1, evaluators[0].evaluate, evaluators=evaluators)
    return games


def _time(games: SelfPlay, seconds: float, warm: bool = True) -> dict:
    """Runs self-play for about `seconds`, after a warm-up unless it is warm; its rates over that time."""
    for _ in range(WARM_MOVES if warm else 0):
        games.move()
    service = games.service
    served, batches = service.served, service.batches
    positions = finished = 0
    cpu, start = time.process_time(), time.perf_counter()
    while True:
        live = sum(int((~g.search.roots.done).sum()) for g in games.groups + games.draining)
        finished += len(games.move())
        positions += live
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            break
    cpu = time.process_time() - cpu
    evals = service.served - served
    return {
        "evals_per_s": evals / elapsed,
        "positions_per_s": positions / elapsed,
        "games_per_s": finished / elapsed,
        "games_finished": finished,
        "evals_per_cpu_s": evals / cpu,
        "mean_batch": evals / max(1, service.batches - batches),
    }


def _row(model, backend: str, precision: str, n: int, sims: int, batch: int, seconds: float) -> dict:
    """Self-play against synthetic in ROUNDS alternating rounds: each ratio from two neighbouring
    measurements, so that a shared VM's drift (25% within minutes) falls on both; the median round."""
    evaluators = [build(model, backend, precision) for _ in range(IN_FLIGHT.get(backend_device(backend), 1))]
    games = _selfplay(n, sims, batch, evaluators)
    rounds = []
    try:
        for r in range(ROUNDS):
            measured = _time(games, seconds / ROUNDS, warm=r == 0)
            at = max(1, round(measured["mean_batch"]))
            synthetic = throughput(evaluators[0], sample_codes(n, at, seed=at), seconds / (2 * ROUNDS))
            rounds.append((measured["evals_per_s"] / synthetic, synthetic, at, measured))
    finally:
        games.close()
    ratio, synthetic, at, median = sorted(rounds, key=lambda r: r[0])[len(rounds) // 2]
    return {
        "backend": backend,
        "precision": precision,
        "device": evaluators[0].device,
        "blocks": model.spec.blocks,
        "channels": model.spec.channels,
        "batch": at,
        "evals_per_s": median["evals_per_s"],
        **{k: sum(m[k] for *_, m in rounds) / ROUNDS for k in ("positions_per_s", "games_per_s")},
        "games_finished": sum(m["games_finished"] for *_, m in rounds),
        "synthetic_per_s": synthetic,
        "of_synthetic": ratio,
        "of_synthetic_rounds": [r[0] for r in rounds],
    }


def bytes_per_game(n: int, sims: int, games: int = MEMORY_GAMES, moves: int = MEMORY_MOVES) -> float:
    """Host bytes a game in flight holds after `moves` moves at `sims` simulations (zero-cost search).

    Everything self-play keeps per game: its share of the trees' arrays as
    allocated (they grow to the largest tree), of the positions, buffers and
    random states, and its move record so far (moves and visit policies).
    """
    play = _selfplay(n, sims, 2 * games, [ZeroCost(n)])
    try:
        for _ in range(moves):
            play.move()
        total = 0
        for group in play.groups:
            s = group.search
            arrays = [*s.tree, *s.roots.arrays, *s._leaves.arrays, s.leaf, s.codes, s.rng, s.gumbel_score]
            total += sum(a.nbytes for a in arrays)
            total += sum(p.nbytes for policies in group.policies for p in policies)
            total += 8 * sum(len(a) for a in group.actions)
        return total / (2 * games)
    finally:
        play.close()


def _zero_cost(n: int, sims: int, batch: int, seconds: float) -> tuple[dict, dict]:
    """The zero-cost loop, search alone and through the service: each its median round by CPU rate."""
    rounds = {True: [], False: []}
    for _ in range(ROUNDS):
        for inline in rounds:
            games = _selfplay(n, sims, batch, [ZeroCost(n, inline=inline)])
            try:
                rounds[inline].append(_time(games, seconds))
            finally:
                games.close()
    median = [sorted(r, key=lambda m: m["evals_per_cpu_s"])[len(r) // 2] for r in rounds.values()]
    return median[0], median[1]


class _Timed:
    """hexzd.native.tree with each kernel call timed: `seconds` in the nogil kernels (dispatch included)."""

    def __init__(self, module):
        self.module, self.seconds = module, 0.0

    def __getattr__(self, name):
        kernel = getattr(self.module, name)
        if not isinstance(kernel, numba.core.registry.CPUDispatcher):
            return kernel

        def timed(*args):
            start = time.perf_counter()
            try:
                return kernel(*args)
            finally:
                self.seconds += time.perf_counter() - start

        return timed


def _threads(n: int, sims: int, batch: int, seconds: float, threads: int) -> dict:
    """The zero-cost search alone: 1 then `threads` search threads (groups of batch/2 games, two a thread).

    The serial share is measured in one thread, as the time outside the tree
    kernels (which release the GIL): the 2-thread gain on a shared VM says as
    much about the VM's second core as about the code. By Amdahl, T threads
    run at most 1 / (serial + (1 - serial) / T) times as fast as one.
    """
    rates, serial = {}, None
    for count in sorted({1, threads}):
        games = _selfplay(n, sims, batch, [ZeroCost(n)], threads=count)
        try:
            rates[count] = _time(games, seconds)["evals_per_s"]
            if count == 1:
                serial = _serial_share(games, seconds)
        finally:
            games.close()
    return {
        "threads": threads,
        "one_per_s": rates[1],
        "all_per_s": rates[threads],
        "gain": rates[threads] / rates[1],
        "serial": serial,
    }


def _serial_share(games: SelfPlay, seconds: float) -> float:
    """The share of one thread's self-play time spent outside the tree kernels: holding the GIL."""
    timed = _Timed(mcts.kernels)
    mcts.kernels = timed
    try:
        start = time.perf_counter()
        while time.perf_counter() - start < seconds:
            games.move()
        return 1 - timed.seconds / (time.perf_counter() - start)
    finally:
        mcts.kernels = timed.module


def run(size: int = 9, seconds: float = 3.0, sims: int = SIMS, batch: int = BATCH, threads: int | None = None) -> dict:
    """Every available backend, each network shape of SHAPES, and the zero-cost search."""
    torch.set_num_threads(threads or DeviceConfig().threads)
    rows = []
    for blocks, channels in SHAPES:
        torch.manual_seed(0)
        model = NetSpec(size, blocks, channels).build().eval()
        for backend, precision in available():
            rows.append(_row(model, backend, precision, size, sims, batch, 2 * seconds))
    alone, hop = _zero_cost(size, sims, batch, seconds)
    scaling = _threads(size, sims, batch, seconds, os.cpu_count() or 1)
    return {
        "benchmark": "selfplay",
        "size": size,
        "sims": sims,
        "games_in_flight": batch,
        "rows": rows,
        "zero_cost_per_core": alone["evals_per_cpu_s"],
        "zero_cost_per_s": alone["evals_per_s"],
        "zero_cost_service_per_core": hop["evals_per_cpu_s"],
        "threads": scaling,
        "hop_us": hops(size, ZeroCost(size, inline=False), requests=max(200, round(1500 * seconds))),
        "bytes_per_game": {str(s): bytes_per_game(size, s) for s in MEMORY_SIMS},
    }


def report(result: dict) -> None:
    n = result["size"]
    print(
        f"self-play, {n}x{n}, {result['sims']} simulations per move, {result['games_in_flight']} games in flight "
        "(2 groups), 1 search thread"
    )
    print(
        f"{'backend':<10}{'precision':<10}{'net':>6}{'batch':>7}{'evals/s':>11}{'positions/s':>13}"
        f"{'games/s':>9}{'synthetic':>11}{'of synth':>10}"
    )
    for r in result["rows"]:
        print(
            f"{r['backend']:<10}{r['precision']:<10}{r['blocks']}x{r['channels']:<4}{r['batch']:>7}"
            f"{r['evals_per_s']:>11,.0f}{r['positions_per_s']:>13,.1f}"
            + (f"{r['games_per_s']:>9.2f}" if r["games_finished"] else f"{'-':>9}")  # none ended: give it --seconds
            + f"{r['synthetic_per_s']:>11,.0f}{r['of_synthetic']:>10.0%}"
            + f"  ({', '.join(f'{x:.0%}' for x in r['of_synthetic_rounds'])})"
        )
    print(
        f"of synth: self-play's evaluations/s over the network's alone at the same batch, the median of {ROUNDS} "
        "alternating rounds (each round's in brackets)"
    )
    alone, hop = result["zero_cost_per_core"], result["zero_cost_service_per_core"]
    print(
        f"zero-cost evaluator, the self-play loop alone: {alone:,.0f} simulations per CPU-second "
        f"({result['zero_cost_per_s']:,.0f}/s wall); through the inference service's thread: {hop:,.0f} "
        f"(the hop costs {1 - hop / alone:.0%}); median of {ROUNDS} rounds each"
    )
    t = result["threads"]
    print(
        f"search threads, zero-cost: 1 thread {t['one_per_s']:,.0f} simulations/s, {t['threads']} threads "
        f"{t['all_per_s']:,.0f} ({t['gain']:.2f}x); one thread spends {t['serial']:.0%} of its time outside the "
        f"GIL-free kernels, so by Amdahl one process's threads run at most {1 / max(t['serial'], 1e-3):,.0f}x "
        f"one thread ({1 / (t['serial'] + (1 - t['serial']) / 16):.1f}x with 16)"
    )
    thread, process = result["hop_us"]["thread"], result["hop_us"]["process"]
    print(
        f"a request's round trip to the network ({ROWS} rows): through the service's thread "
        f"{thread['wall_us']:,.0f} us wall, {thread['cpu_us']:,.0f} us CPU; to a server process over ZeroMQ "
        f"and shared memory {process['wall_us']:,.0f} us wall, {process['cpu_us']:,.0f} us CPU (both sides)"
    )
    memory = ", ".join(f"{b / 1024:,.0f} KiB at {s} sims" for s, b in result["bytes_per_game"].items())
    print(f"host memory per game in flight: {memory}")
